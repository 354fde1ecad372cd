"""Mends of the upload side (bip._client._upload.Uploader): a block the disk cannot read is
still answered (BEP 6) and never keeps a slot of the peer's request queue; nor does a request
the torrent refuses (a piece lost from storage)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import trio
import trio.testing
from _engine_helpers import address_of, loopback_config, make_torrent, write_content
from _hostile_peer import hostile_peer
from test_upload_fairness import BLOCK, DEADLINE, NUM_PIECES, TORRENT, Remote, Seed, requests, seed

from bip._client import TorrentOptions, open_session
from bip._client._swarm import REASON_STALLED
from bip._client._upload import refuse_request
from bip_disk import PieceLost
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_peer import (
    NEED_DATA,
    Bitfield,
    ConnectionLimits,
    Interested,
    LocalProtocolError,
    Peer,
    PeerConnection,
    PeerManager,
    Piece,
    RejectRequest,
    Request,
    StaleSendError,
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


async def test_a_fast_peer_that_stopped_reading_is_dropped_when_a_failed_read_cannot_be_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # send_control refuses a reject when the peer left its whole bound of control messages
    # unwritten: it stopped reading, and is dropped (as Torrent._refuse does), not kept on
    # with its request quietly withdrawn.
    async with seed(reqq=4) as s:
        s.disk.failing.add((0, 0, BLOCK))
        peer, remote = await s.connect(1)
        removed: list[tuple[Peer, str]] = []
        remove = s.manager.remove_peer

        def record(peer: Peer, reason: str) -> None:
            removed.append((peer, reason))
            remove(peer, reason)

        monkeypatch.setattr(s.manager, "send_control", lambda peer, message: False)
        monkeypatch.setattr(s.manager, "remove_peer", record)
        await remote.send(*requests(0, 1))
        await s.settle()
        assert len(s.disk.reads) == 1
        assert removed == [(peer, REASON_STALLED)]


# -- Torrent._refuse: a request for a piece lost from storage ------------------------------------


async def test_a_refused_request_of_a_peer_without_fast_frees_its_slot(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (4 * 4 * BLOCK,))
    torrent = make_torrent(folder, "v1", piece_length=4 * BLOCK)  # 4 pieces of 4 blocks
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as seeder:
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            async with hostile_peer(
                address_of(seeder), torrent.info.info_hash, extensions=Extensions.EXTENSION_PROTOCOL
            ) as remote:
                await remote.send(Interested())
                await remote.wait_for(lambda m: isinstance(m, Unchoke))
                assert seeding.handle is not None
                assert seeding.swarm is not None
                # Lost from storage (a write re-created its file): the torrent goes on.
                await seeding.disk_event(PieceLost(seeding.handle, 0, "test: file re-created"))
                [peer] = seeding.swarm.joined
                assert not peer.connection.fast
                await remote.send(*(Request(0, b * BLOCK, BLOCK) for b in range(4)))
                await remote.send(Request(1, 0, BLOCK))
                await remote.wait_for(lambda m: isinstance(m, Piece) and m.index == 1)
                # Refused with nothing sent (BEP 3), but holding no reqq slot.
                assert not peer.connection.peer_requests
                assert not [m for m in remote.received if isinstance(m, Piece) and m.index == 0]


# -- one way to refuse a request: the uploader's unreadable block, the torrent's refusal ------


class Answering:
    """A manager whose ``send_control`` answers ``answer`` (a bool, or an error to raise)."""

    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.sent: list[object] = []
        self.removed: list[str] = []

    def send_control(self, peer: object, message: object) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        self.sent.append(message)
        return self.answer

    def remove_peer(self, peer: object, reason: str) -> None:
        self.removed.append(reason)


def refused(answer: bool | Exception, *, fast: bool) -> tuple[Answering, list[object]]:
    """What :func:`refuse_request` did for a request of a peer with or without fast."""
    withdrawn: list[object] = []
    connection = SimpleNamespace(fast=fast, withdraw_peer_request=lambda *k: withdrawn.append(k))
    manager = Answering(answer)
    refuse_request(
        cast(PeerManager, manager), cast(Peer, SimpleNamespace(connection=connection)), 7, 0, BLOCK
    )
    return manager, withdrawn


def test_one_function_refuses_a_request_with_a_reject_or_a_withdrawal() -> None:
    # Uploader (a block it could not read) and Torrent._refuse (a piece not to upload) share
    # it: with fast a reject, a peer that stopped reading dropped; else the request withdrawn.
    manager, withdrawn = refused(True, fast=True)
    assert (manager.sent, manager.removed, withdrawn) == ([RejectRequest(7, 0, BLOCK)], [], [])
    manager, withdrawn = refused(False, fast=True)
    assert (manager.removed, withdrawn) == ([REASON_STALLED], [])
    manager, withdrawn = refused(True, fast=False)
    assert (manager.sent, manager.removed, withdrawn) == ([], [], [(7, 0, BLOCK)])
    # Cancelled before it is answered: nothing to do.
    manager, withdrawn = refused(StaleSendError("cancelled"), fast=True)
    assert (manager.sent, manager.removed, withdrawn) == ([], [], [])
    # Any other misuse of the protocol is a bug of ours: never swallowed.
    with pytest.raises(LocalProtocolError, match="a bug"):
        refused(LocalProtocolError("a bug"), fast=True)
