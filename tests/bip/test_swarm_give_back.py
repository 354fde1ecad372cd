"""Requests the connection refused go back to the brain only when a fast peer's choke refused
them (:meth:`bip._client._swarm.Swarm.carry_out`), once per pass and without recursion: a peer
that allowed a piece fast and then took it back made the session recurse until the stack
overflowed, which killed it.

The sans-IO tests drive a real brain and real :class:`~bip_peer.PeerConnection` objects (so
the refusals are bip_peer's own) behind a stand-in for the peer manager; the connection has
read what the brain has not heard of yet, as in the session, where events are a queue.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import cast

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, write_content
from _hostile_peer import hostile_peer
from _swarm_fakes import PLAIN, FakeManager, FakePeer, connection, donthave, read

from bip._client import TorrentOptions, open_session
from bip._client._swarm import Swarm
from bip_peer import (
    AllowedFast,
    Bitfield,
    Choke,
    Extended,
    HaveAll,
    Interested,
    Peer,
    PeerConnection,
    PeerManager,
    Request,
    StaleSendError,
    Unchoke,
)
from bip_select import (
    BLOCK_SIZE,
    PeerChokedUs,
    PeerDontHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    SwarmBrain,
    TorrentGeometry,
)
from bip_select import AllowedFast as AllowedFastInput

PIECES = 8


def swarm_with(*connections: PeerConnection) -> tuple[Swarm, FakeManager, list[Peer]]:
    """A swarm of a brain for :data:`PIECES` one-block pieces and one peer per connection."""
    brain = SwarmBrain(TorrentGeometry(PIECES, BLOCK_SIZE), rng=random.Random(1))
    manager = FakeManager()
    swarm = Swarm(cast(PeerManager, manager), brain, on_banned=lambda peer: None)
    peers = []
    for ours in connections:
        fake = FakePeer(ours)
        manager.peers.add(fake)
        peer = cast(Peer, fake)
        swarm.joined.add(peer)
        swarm.feed(PeerJoined(peer, fast=ours.fast), 0.0)
        peers.append(peer)
    return swarm, manager, peers


def outstanding(swarm: Swarm, peer: Peer) -> int:
    return swarm.brain.picker.requests.num_outstanding(peer)


async def test_a_piece_taken_back_is_given_back_without_asking_the_peer_again() -> None:
    # The reviewer's case: piece 0 allowed fast, then lt_donthave(0), both read before the
    # brain heard of either. Given back alone, the brain asked for it again and again
    # (recursion); the brain hears the dont-have first, so it is not asked of the peer again.
    ours = connection(PIECES)
    read(ours, HaveAll(), AllowedFast(0), donthave(0))
    swarm, manager, [peer] = swarm_with(ours)
    swarm.feed(PeerHaveAll(peer), 0.0)
    swarm.feed(AllowedFastInput(peer, 0), 0.0)
    assert manager.attempts == 1
    assert [error.choked for error in manager.refused] == [False]
    # Back in the pool at once (see test_refused_request_taken_back.py), not pending.
    assert outstanding(swarm, peer) == 0
    swarm.feed(PeerDontHave(peer, 0), 0.0)  # the peer's own message: no news
    assert manager.attempts == 1
    assert not ours.our_requests


async def test_a_fast_peers_choke_gives_the_requests_back() -> None:
    ours = connection(PIECES)
    read(ours, HaveAll(), Unchoke(), Choke())  # the choke read before the brain saw the unchoke
    swarm, manager, [peer] = swarm_with(ours)
    swarm.feed(PeerHaveAll(peer), 0.0)
    swarm.feed(PeerUnchokedUs(peer), 0.0)
    assert manager.refused
    assert all(error.choked for error in manager.refused)
    assert outstanding(swarm, peer) == 0  # back in the pool, not waiting for a reject
    swarm.feed(PeerChokedUs(peer), 0.0)  # the choke's own event: no news
    read(ours, Unchoke())
    swarm.feed(PeerUnchokedUs(peer), 0.0)
    assert ours.our_requests  # asked again, once unchoked
    assert outstanding(swarm, peer) == len(ours.our_requests)


async def test_without_the_fast_extension_the_choke_frees_them() -> None:
    # Without BEP 6 the choke's own event frees every request; an early give-back would
    # overtake blocks already read.
    ours = connection(PIECES, PLAIN)
    read(ours, Bitfield(b"\xff"), Unchoke(), Choke())
    swarm, manager, [peer] = swarm_with(ours)
    swarm.feed(PeerHaveAll(peer), 0.0)  # what the bitfield means to the brain
    swarm.feed(PeerUnchokedUs(peer), 0.0)
    assert manager.refused
    assert all(error.choked for error in manager.refused)
    assert outstanding(swarm, peer) == len(manager.refused)  # kept until the choke's event
    swarm.feed(PeerChokedUs(peer), 0.0)
    assert outstanding(swarm, peer) == 0


async def test_a_block_refused_again_goes_back_once() -> None:
    # The connection remembers one allowed-fast piece, the brain both: every ask for piece 0
    # meets the choke. Each (peer, block) goes back once per pass; then the loop ends.
    ours = connection(PIECES, max_allowed_fast=1)
    read(ours, HaveAll(), AllowedFast(1), AllowedFast(0))
    swarm, manager, [peer] = swarm_with(ours)
    swarm.feed(PeerHaveAll(peer), 0.0)
    swarm.feed(AllowedFastInput(peer, 1), 0.0)
    swarm.feed(AllowedFastInput(peer, 0), 0.0)
    assert 1 <= manager.attempts <= 4
    assert (1, 0, BLOCK_SIZE) in ours.our_requests
    assert all(error.choked for error in manager.refused)
    assert not swarm._giving_back
    assert not swarm._unsent


def test_the_connection_says_when_a_choke_refused_a_request() -> None:
    ours = connection(PIECES)
    read(ours, HaveAll(), AllowedFast(2), donthave(3))
    with pytest.raises(StaleSendError) as choked:
        ours.send(Request(1, 0, BLOCK_SIZE))
    assert choked.value.choked
    with pytest.raises(StaleSendError) as lacking:
        ours.send(Request(3, 0, BLOCK_SIZE))
    assert not lacking.value.choked
    ours.send(Request(2, 0, BLOCK_SIZE))  # allowed fast
    assert set(ours.our_requests) == {(2, 0, BLOCK_SIZE)}


async def test_a_peer_taking_back_an_allowed_fast_piece_leaves_the_session_running(
    tmp_path: Path,
) -> None:
    # The reviewer's session repro: allowed fast 0, then lt_donthave(0), in one write. The
    # recursion escaped the session's peer routing and ended the session.
    folder = write_content(tmp_path / "seed", (BLOCK_SIZE * 8,))
    torrent = make_torrent(folder, "v1", piece_length=BLOCK_SIZE)
    with trio.fail_after(20):
        async with open_session(loopback_config(listen=(("127.0.0.2", 0),))) as session:
            download = await session.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            while download.swarm is None:
                await trio.sleep(0.01)
            async with hostile_peer(address_of(session), torrent.info.info_hash) as peer:
                await peer.wait_until(lambda: peer.their_handshake is not None)
                assert peer.their_handshake is not None
                donthave_id = peer.their_handshake.m["lt_donthave"]
                await peer.send(HaveAll())
                await peer.wait_for(lambda m: isinstance(m, Interested))  # we choke it
                await peer.send(AllowedFast(0), Extended(donthave_id, struct.pack(">I", 0)))
                # Still routing: the next allowed-fast piece is asked for.
                await peer.send(AllowedFast(1))
                request = await peer.wait_for(lambda m: isinstance(m, Request))
                assert isinstance(request, Request)
                assert request.index == 1
                assert await peer.still_open(0.2)
