"""Mends of the upload side (bip._client._upload.Uploader): a block the disk cannot read is
still answered (BEP 6) and never keeps a slot of the peer's request queue."""

from __future__ import annotations

import trio
import trio.testing
from test_upload_fairness import BLOCK, NUM_PIECES, TORRENT, Remote, Seed, requests, seed

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_peer import (
    NEED_DATA,
    Bitfield,
    ConnectionLimits,
    Interested,
    Peer,
    PeerConnection,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
)
from bip_select import Block


async def answers(remote: Remote, count: int) -> list[Piece | RejectRequest]:
    """The next ``count`` pieces or rejects the seed sends ``remote``."""
    got: list[Piece | RejectRequest] = []
    while len(got) < count:
        data = await remote.stream.receive_some()
        assert data, "the seed closed the connection"
        remote.connection.receive_data(data)
        while (event := remote.connection.next_event()) is not NEED_DATA:
            if isinstance(event, (Piece, RejectRequest)):
                got.append(event)
    return got


async def test_a_failed_read_is_rejected_with_fast_and_frees_its_slot() -> None:
    async with seed(reqq=4) as s:
        s.disk.failing.update((0, i * BLOCK, BLOCK) for i in range(4))
        peer, remote = await s.connect(1)
        await remote.send(*requests(0, 4))
        await s.settle()
        assert len(s.disk.reads) == 4
        assert not peer.connection.peer_requests  # each answered, so none holds a slot
        got = await answers(remote, 4)
        # BEP 6: every request is answered, a block we cannot read with a reject.
        assert sorted((m.index, m.begin) for m in got if isinstance(m, RejectRequest)) == [
            (0, i * BLOCK) for i in range(4)
        ]
        # Its reqq slots are free again: a request for a block we can read is served.
        await remote.send(Request(1, 0, BLOCK))
        assert [type(m) for m in await answers(remote, 1)] == [Piece]
        assert peer.connection.refused_requests == 0
        assert s.sent == [(peer, Block(1, 0, BLOCK))]


async def connect_plain(s: Seed, n: int) -> tuple[Peer, Remote]:
    """A leecher without the fast extension at 10.0.0.n, unchoked by us and interested."""
    local, far = trio.testing.memory_stream_pair()
    handshake = CompletedHandshake(
        stream=local,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + bytes([n]) * 12),
        extensions=Extensions(0),
        our_extensions=Extensions(0),
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress.parse(f"10.0.0.{n}:6881"),
        direction="inbound",
    )
    peer = s.manager.add_peer(handshake, num_pieces=NUM_PIECES)
    remote = Remote(far, s.reqq)
    remote.connection = PeerConnection(
        num_pieces=NUM_PIECES,
        info_hash=TORRENT,
        our_extensions=Extensions(0),
        their_extensions=Extensions(0),
        limits=ConnectionLimits(max_peer_requests=s.reqq),
    )
    await s.manager.send(peer, Bitfield(b"\xff" * (NUM_PIECES // 8)))
    await s.manager.send(peer, Unchoke())
    await remote.read_until(lambda: not remote.connection.peer_choking)
    await remote.send(Interested())
    return peer, remote


async def test_a_failed_read_without_fast_withdraws_the_request() -> None:
    async with seed(reqq=4) as s:
        s.disk.failing.update((0, i * BLOCK, BLOCK) for i in range(4))
        peer, remote = await connect_plain(s, 2)
        await remote.send(*requests(0, 4))
        await s.settle()
        assert len(s.disk.reads) == 4
        # No reject to send without fast (the peer times the request out), but the request
        # must not hold one of its reqq slots for good.
        assert not peer.connection.peer_requests
        await remote.send(Request(1, 0, BLOCK))
        await remote.read_until(lambda: len(remote.pieces) == 1)
        assert remote.pieces == [(1, 0)]
        assert peer.connection.refused_requests == 0
