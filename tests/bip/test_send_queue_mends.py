"""Control messages must not get an honest slow peer dropped (hunt h2).

While we download fast, every verified piece queues a have to every peer at once. A slow but
honest peer we upload to has our writer blocked in ``send_all`` for seconds per block, so its
haves piled up past the send queue's message count (``_SEND_QUEUE``, sized for requests and
blocks), the next ``send_nowait`` failed and :meth:`Swarm.carry_out` dropped the peer as
"send queue full". And a reject refused for queue space was lost (``Torrent._refuse``), leaving
a fast-extension peer's request unanswered (BEP 6 answers every request).

The peer here is a real :class:`~bip_peer.PeerManager` connection over a lockstep stream: our
writer blocks in ``send_all`` until the far end reads, which it does only when the test says.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from types import SimpleNamespace
from typing import cast

import trio
import trio.testing

from bip._client._session import _SEND_QUEUE
from bip._client._swarm import REASON_STALLED, Swarm
from bip._client._torrent import UPLOAD_ONLY_EXTENSION, Torrent
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer import (
    NEED_DATA,
    Have,
    HaveAll,
    Interested,
    KeepAlive,
    Message,
    MessageDecoder,
    Peer,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    RejectRequest,
    Request,
    Unchoke,
    UploadOnly,
    open_peer_manager,
)
from bip_select import BLOCK_SIZE, PeerJoined, SendHave, SwarmBrain, TorrentGeometry

PIECES = 3000  # more haves than the session's send queue holds in messages (1064)
FAST = Extensions.FAST


@dataclass
class Link:
    """Our manager, the peer it holds, and the far end of its stream (read on demand)."""

    manager: PeerManager
    peer: Peer
    far: trio.abc.Stream
    removed: list[PeerRemoved]
    decoder: MessageDecoder

    async def read_until(self, done: type[Message], count: int = 1) -> list[Message]:
        """What the far end reads until it has ``count`` messages of type ``done``."""
        seen: list[Message] = []
        found = 0
        with trio.fail_after(10):
            while found < count:
                message = self.decoder.next_message()
                if message is NEED_DATA:
                    self.decoder.receive_data(await self.far.receive_some(65536))
                    continue
                assert isinstance(message, Message)
                seen.append(message)
                found += isinstance(message, done)
        return seen


@asynccontextmanager
async def link(**config: int) -> AsyncIterator[Link]:
    """One peer (fast extension, no BEP 10) whose far end reads only when told to."""
    ours, far = trio.testing.lockstep_stream_pair()
    info_hash = InfoHash(v1=bytes(range(20)))
    handshake = CompletedHandshake(
        stream=ours,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-000000000001"),
        extensions=FAST,
        our_extensions=FAST,
        info_hash=info_hash,
        swarm_id=info_hash.swarm_ids()[0],
        address=PeerAddress(ip_address("127.0.0.9"), 6881),
        direction="outbound",
    )
    removed: list[PeerRemoved] = []
    options = {"send_queue_size": _SEND_QUEUE, **config}
    async with (
        open_peer_manager(PeerManagerConfig(**options)) as manager,  # type: ignore[arg-type]
        trio.open_nursery() as nursery,
    ):

        async def drain() -> None:
            async for event in manager.events():
                if isinstance(event, PeerRemoved):
                    removed.append(event)

        nursery.start_soon(drain)
        peer = manager.add_peer(handshake, num_pieces=PIECES)
        yield Link(manager, peer, far, removed, MessageDecoder())
        nursery.cancel_scope.cancel()


def swarm_of(link: Link) -> Swarm:
    brain = SwarmBrain(TorrentGeometry(PIECES, BLOCK_SIZE), rng=random.Random(1))
    swarm = Swarm(link.manager, brain, on_banned=lambda peer: None)
    swarm.joined.add(link.peer)
    swarm.feed(PeerJoined(link.peer, fast=True), 0.0)
    return swarm


async def settled(link: Link) -> None:
    """Let the peer's tasks run until the writer is blocked in its first write."""
    manager = link.manager
    with trio.fail_after(5):
        while (
            manager.queued_bytes(link.peer) == 0 or not link.manager._peers[link.peer].sending_since
        ):
            await trio.sleep(0)
            if not manager.is_connected(link.peer):
                break


async def test_a_have_per_piece_does_not_drop_a_slow_peer() -> None:
    async with link() as ours:
        swarm = swarm_of(ours)
        assert ours.manager.send_nowait(ours.peer, KeepAlive())  # the writer blocks on it
        await settled(ours)
        # Every piece verified while the peer reads nothing: a have each, past the message
        # count the queue holds (the hunt: dropped with 955 haves queued, ~57 KB).
        swarm.carry_out(SendHave(ours.peer, piece) for piece in range(PIECES))
        assert ours.manager.is_connected(ours.peer)
        messages = await ours.read_until(Have, PIECES)
        assert [m.index for m in messages if isinstance(m, Have)] == list(range(PIECES))
        assert not ours.removed


async def test_a_peer_that_stops_reading_is_still_dropped() -> None:
    async with link() as ours:
        swarm = swarm_of(ours)
        assert ours.manager.send_nowait(ours.peer, KeepAlive())
        await settled(ours)
        # Far more control bytes than an honest peer can owe (a have per piece, the rejects
        # of four reqq, 64 KiB): it stopped reading. Haves of the same piece stand in for any
        # control message.
        swarm.carry_out(SendHave(ours.peer, piece % PIECES) for piece in range(30_000))
        assert not ours.manager.is_connected(ours.peer)
        with trio.fail_after(5):
            while not ours.removed:
                await trio.sleep(0)
        assert ours.removed[0].reason == REASON_STALLED


async def test_a_reject_is_never_lost_for_queue_space() -> None:
    async with link(send_queue_size=4) as ours:
        manager, peer = ours.manager, ours.peer
        assert manager.send_nowait(peer, HaveAll())
        assert manager.send_nowait(peer, Unchoke())
        await ours.far.send_all(Interested().encode() + Request(7, 0, BLOCK_SIZE).encode())
        await ours.read_until(Unchoke)  # then reads nothing more
        with trio.fail_after(5):
            while not peer.connection.peer_requests:
                await trio.sleep(0)
        assert manager.send_nowait(peer, Have(1))  # the writer blocks on it
        await settled(ours)
        while manager.send_nowait(peer, Have(2)):  # the message count is full
            pass
        torrent = cast(Torrent, SimpleNamespace(_manager=manager))
        Torrent._refuse(torrent, peer, Request(7, 0, BLOCK_SIZE))
        messages = await ours.read_until(RejectRequest)
        assert messages[-1] == RejectRequest(7, 0, BLOCK_SIZE)
        assert manager.is_connected(peer)


class RefusingManager:
    """A manager whose control bound refuses ``full`` peers (they stopped reading)."""

    def __init__(self, full: set[str]) -> None:
        self.full = full
        self.sent: list[tuple[str, object]] = []
        self.removed: list[tuple[str, str]] = []

    def send_control(self, peer: SimpleNamespace, message: object) -> bool:
        if peer.name in self.full:
            return False
        self.sent.append((peer.name, message))
        return True

    def remove_peer(self, peer: SimpleNamespace, reason: str) -> None:
        self.removed.append((peer.name, reason))


def test_an_upload_only_refused_drops_the_peer_as_stalled() -> None:
    # BEP 21's upload_only is a control message: a peer over the control bound stopped
    # reading and is dropped, as for haves and rejects, not left untold.
    def speaking(name: str) -> SimpleNamespace:
        ids = {UPLOAD_ONLY_EXTENSION: 3}
        return SimpleNamespace(name=name, connection=SimpleNamespace(their_extension_ids=ids))

    manager = RefusingManager(full={"stalled"})
    torrent = cast(
        Torrent,
        SimpleNamespace(
            _manager=manager,
            says_upload_only=True,
            _told_upload_only=False,
            peers=[speaking("reading"), speaking("stalled")],
        ),
    )
    Torrent._sync_upload_only(torrent)
    assert manager.sent == [("reading", UploadOnly(True))]
    assert manager.removed == [("stalled", REASON_STALLED)]
