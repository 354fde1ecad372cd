"""BEP 6 allowed fast in the bip client, as libtorrent grants it: a seeding session that chokes
everybody (its choker given no slots) grants a scripted fast peer the first
``allowed_fast_set_size`` pieces of its BEP 6 set once it says it is interested, serves those
pieces while it chokes the peer, rejects the others, and drops a choked peer that takes a
granted piece more than three times over (libtorrent's ``too_many_requests_when_choked``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, write_content
from _hostile_peer import HostilePeer, hostile_peer

import bip_select._brain
from bip._client import ClientConfig, TorrentOptions, open_session
from bip_metainfo import Metainfo
from bip_peer import (
    AllowedFast,
    HaveAll,
    Interested,
    Message,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
    allowed_fast_set,
)
from bip_select import Choker

PIECE = 16384
SIZES = (330_000, 150_000)  # 30 pieces of one block each
DEADLINE = 20.0
SEED_HOST = "127.0.0.2"
PEER_HOST = "127.0.0.5"


@pytest.fixture(autouse=True)
def choke_everybody(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's brains unchoke nobody: every request must be an allowed-fast one."""
    monkeypatch.setattr(
        bip_select._brain, "Choker", functools.partial(Choker, regular_slots=0, optimistic_slots=0)
    )


@contextlib.asynccontextmanager
async def choked_peer(
    tmp_path: Path, **changes: object
) -> AsyncIterator[tuple[Metainfo, HostilePeer]]:
    """A session seeding a v1 torrent (``loopback_config(**changes)``) and a scripted fast peer
    connected to it from :data:`PEER_HOST`."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    async with open_session(loopback_config(listen=((SEED_HOST, 0),), **changes)) as seeder:
        seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
        await seeding.wait_complete()
        async with hostile_peer(
            address_of(seeder), torrent.info.info_hash, local_host=PEER_HOST
        ) as peer:
            yield torrent, peer


def expected_set(torrent: Metainfo, k: int) -> list[int]:
    """The set BEP 6 gives the scripted peer's address for ``torrent``."""
    swarm_id = torrent.info.info_hash.swarm_ids()[0]
    return allowed_fast_set(PEER_HOST, swarm_id, torrent.info.num_pieces, k)


def granted(peer: HostilePeer) -> list[int]:
    return [m.index for m in peer.received if isinstance(m, AllowedFast)]


async def ask(peer: HostilePeer, piece: int) -> Message:
    """Request ``piece`` (one block); the session's answer (a piece or a reject)."""
    start = len(peer.received)

    def answer() -> Message | None:
        return next(
            (
                m
                for m in peer.received[start:]
                if isinstance(m, Piece | RejectRequest) and m.index == piece
            ),
            None,
        )

    await peer.send(Request(piece, 0, PIECE))
    await peer.wait_until(lambda: answer() is not None)
    found = answer()
    assert found is not None
    return found


async def test_a_choked_fast_peer_is_granted_its_set_and_served_it(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with choked_peer(tmp_path) as (torrent, peer):
            expected = expected_set(torrent, 5)  # libtorrent's default size
            await peer.wait_for(lambda m: isinstance(m, HaveAll))
            await peer.send(Interested())
            await peer.wait_until(lambda: len(granted(peer)) >= len(expected))
            assert granted(peer) == expected
            other = next(p for p in range(torrent.info.num_pieces) if p not in expected)
            answer = await ask(peer, expected[0])
            assert isinstance(answer, Piece)
            assert len(answer.block) == PIECE
            assert isinstance(await ask(peer, other), RejectRequest)
            assert not any(isinstance(m, Unchoke) for m in peer.received)
            assert not peer.closed.is_set()


async def test_a_choked_peer_taking_a_granted_piece_over_and_over_is_dropped(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE):
        async with choked_peer(tmp_path) as (_, peer):
            await peer.send(Interested())
            await peer.wait_until(lambda: len(granted(peer)) > 0)
            piece = granted(peer)[0]
            for _ in range(3):  # a whole piece three times over (one block each here)
                assert isinstance(await ask(peer, piece), Piece)
            await peer.send(Request(piece, 0, PIECE))
            assert await peer.wait_closed(DEADLINE / 2)


async def test_a_request_routed_after_our_choke_counts_only_for_a_granted_piece(
    tmp_path: Path,
) -> None:
    """A request the peer made while unchoked can reach the torrent after our choke (its
    event queued meanwhile). Before: ``Swarm.fast_request`` counted it whatever its piece,
    and a fourth such request for a piece never granted dropped the peer as a fast abuser.
    Only a granted piece counts; the others the connection already rejected at the choke,
    and the uploader skips them."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(listen=((SEED_HOST, 0),))) as seeder:
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            async with hostile_peer(
                address_of(seeder), torrent.info.info_hash, local_host=PEER_HOST
            ) as peer:
                await peer.send(Interested())
                await peer.wait_until(lambda: len(granted(peer)) > 0)
                swarm = seeding.swarm
                assert swarm is not None
                (joined,) = swarm.joined
                assert joined.connection.am_choking
                other = next(p for p in range(torrent.info.num_pieces) if p not in granted(peer))
                for _ in range(4):  # as the torrent hears such requests, past the limit
                    seeding._request(joined, Request(other, 0, PIECE))
                assert not peer.closed.is_set()
                assert joined in swarm.joined
                # A granted piece still counts (and is served).
                piece = granted(peer)[0]
                for _ in range(3):
                    assert isinstance(await ask(peer, piece), Piece)
                await peer.send(Request(piece, 0, PIECE))
                assert await peer.wait_closed(DEADLINE / 2)


async def test_none_granted_with_a_size_of_zero(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with choked_peer(tmp_path, allowed_fast_set_size=0) as (torrent, peer):
            await peer.send(Interested())
            piece = expected_set(torrent, 5)[0]
            # The interest is handled before the request: a grant would come first.
            assert isinstance(await ask(peer, piece), RejectRequest)
            assert granted(peer) == []


def test_the_setting_is_libtorrents_and_checked() -> None:
    assert ClientConfig().allowed_fast_set_size == 5
    assert ClientConfig(allowed_fast_set_size=0).allowed_fast_set_size == 0
    assert ClientConfig(allowed_fast_set_size=64).allowed_fast_set_size == 64
    for bad in (-1, 65):
        with pytest.raises(ValueError, match="allowed_fast_set_size"):
            ClientConfig(allowed_fast_set_size=bad)
    for wrong in (True, 5.0, "5"):
        with pytest.raises(TypeError, match="allowed_fast_set_size"):
            ClientConfig(allowed_fast_set_size=wrong)  # type: ignore[arg-type]


def test_an_int_subclass_is_refused_as_each_swarm_would() -> None:
    """The config checks the set size as each Swarm does (review of the allowed-fast mend):
    an IntEnum accepted here would fail every torrent later."""
    import enum

    class Size(enum.IntEnum):
        FIVE = 5

    with pytest.raises(TypeError):
        ClientConfig(allowed_fast_set_size=Size.FIVE)
