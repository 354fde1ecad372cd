"""Hostile peers against a leeching session: the scripted attacker (``_hostile_peer``) connects
to a session downloading a torrent (or only its magnet link), says it has everything, and then
answers the session's requests badly; only afterwards does an honest seed join.

After every campaign: no traceback was logged, the attacker was disconnected where a protocol
rule was broken and kept otherwise, what the session holds for it stayed bounded, and the
download still completes from the honest seed with every byte right.

Each client has its own 127.0.0.X: the honest seed .2, the leecher .4, the attacker .5.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import trio
from _engine_helpers import Version, loopback_config, make_torrent, same_files, write_content
from _hostile_peer import ATTACKER_IDS, BadRecords, HostilePeer, bad_records, hostile_peer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip._client import Session, Torrent, TorrentOptions, open_session
from bip_bencode import encode
from bip_handshake import PeerAddress
from bip_metainfo import MagnetLink, Metainfo
from bip_peer import (
    AllowedFast,
    Bitfield,
    Choke,
    Extended,
    ExtendedHandshake,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    Message,
    MetadataRequest,
    Peer,
    Piece,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
    decode_metadata_message,
)

SIZES = (150_000, 60_000)
PIECE_LENGTH = 16384
DEADLINE = 30.0
SEED_HOST = "127.0.0.2"
LEECH_HOST = "127.0.0.4"
ATTACKER_HOST = "127.0.0.5"
CAMPAIGN_TIME = 0.5  # how long an answering campaign goes on (it answers as requests come)
MAX_OUR_REQUESTS = 500

Expect = Literal["closed", "open", "either"]


@dataclass
class Arena:
    """A leeching session, the content it wants and an honest seed not yet connected to it."""

    leecher: Session
    download: Torrent
    torrent: Metainfo
    folder: Path
    seed: PeerAddress
    address: PeerAddress

    def attacker(self) -> Peer | None:
        """The leecher's connection to the attacker, if it still has one."""
        return next(
            (p for p in self.leecher.manager.peers if str(p.address.host) == ATTACKER_HOST), None
        )

    def check_bounded(self) -> None:
        """What the leecher holds for the attacker stays under campaign-independent bounds."""
        peer = self.attacker()
        if peer is None:
            return
        assert len(peer.connection.our_requests) <= MAX_OUR_REQUESTS
        assert len(peer.connection.cancelled_requests) <= 4096
        assert self.leecher.manager.queued_bytes(peer) <= 1024 * 1024

    def block(self, index: int, begin: int, length: int) -> bytes:
        """The true bytes of a block of the content."""
        data = b"".join(
            self.folder.parent.joinpath(*entry.path).read_bytes()
            for entry in self.torrent.info.files
            if not entry.is_pad
        )
        start = index * PIECE_LENGTH + begin
        return data[start : start + length]


@contextlib.asynccontextmanager
async def arena(
    tmp_path: Path, *, magnet: bool = False, version: Version = "v1"
) -> AsyncIterator[Arena]:
    """An honest seed on :data:`SEED_HOST` and a leecher that knows nobody yet."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, version, piece_length=PIECE_LENGTH)
    async with (
        open_session(loopback_config(listen=((SEED_HOST, 0),))) as seeder,
        open_session(loopback_config(listen=((LEECH_HOST, 0),))) as leecher,
    ):
        seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
        await seeding.wait_complete()
        [seed] = seeder.handshaker.listen_addresses
        [address] = leecher.handshaker.listen_addresses
        source = MagnetLink.from_info_hash(torrent.info.info_hash) if magnet else torrent
        download = await leecher.add_torrent(
            source, TorrentOptions(tmp_path / "down", resume=False)
        )
        yield Arena(leecher, download, torrent, folder, seed, address)


async def answer_requests(peer: HostilePeer, answer: Callable[[Request], list[Message]]) -> int:
    """Answer the leecher's requests with ``answer(request)`` for :data:`CAMPAIGN_TIME`
    seconds (or until it hangs up); returns how many requests came."""
    seen = 0
    with trio.move_on_after(CAMPAIGN_TIME):
        while not peer.closed.is_set():
            await peer.wait_until(_more_than(peer, seen))
            fresh, seen = peer.received[seen:], len(peer.received)
            replies = [m for r in fresh if isinstance(r, Request) for m in answer(r)]
            if replies and not await peer.send(*replies):
                break
    return sum(isinstance(m, Request) for m in peer.received)


def _more_than(peer: HostilePeer, count: int) -> Callable[[], bool]:
    """Whether the peer received more than ``count`` messages, or the connection closed."""
    return lambda: len(peer.received) > count or peer.closed.is_set()


async def as_seed(peer: HostilePeer) -> None:
    """Say the attacker has everything and unchoke the leecher."""
    await peer.send(HaveAll(), Unchoke(), *(AllowedFast(i) for i in range(4)))


# -- campaigns against a leecher of a .torrent ------------------------------------------------

Campaign = Callable[[HostilePeer, Arena], Awaitable[Expect]]


async def wrong_size_piece(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    request = await peer.wait_for(lambda m: isinstance(m, Request))
    assert isinstance(request, Request)
    await peer.send(Piece(request.index, request.begin, bytes(request.length - 1)))
    return "closed"


async def oversized_piece(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    request = await peer.wait_for(lambda m: isinstance(m, Request))
    assert isinstance(request, Request)
    await peer.send(Piece(request.index, request.begin, bytes(request.length + 1)))
    return "closed"


async def piece_past_last_piece(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    await peer.send(Piece(arena.torrent.info.num_pieces, 0, bytes(16384)))
    return "closed"


async def unasked_pieces(peer: HostilePeer, arena: Arena) -> Expect:
    # True data, but for blocks the leecher asked nobody (or another peer) for, and rejects
    # of requests it never made: wasted, ignored, never stored.
    await as_seed(peer)
    num_pieces = arena.torrent.info.num_pieces
    await peer.send(*(Piece(i, 0, bytes(arena.block(i, 0, 16384))) for i in range(num_pieces)))
    await peer.send(*(RejectRequest(i % num_pieces, 0, 16384) for i in range(2000)))
    await peer.send(*(Piece(i % num_pieces, 1, bytes(100)) for i in range(500)))
    return "open"


async def reject_everything(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    count = await answer_requests(peer, lambda r: [RejectRequest(r.index, r.begin, r.length)])
    assert count > 0
    arena.check_bounded()
    return "either"  # a peer that never gives may be dropped for it


async def never_answer(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    await answer_requests(peer, lambda r: [])
    arena.check_bounded()
    return "either"


async def answer_twice(peer: HostilePeer, arena: Arena) -> Expect:
    # Each block twice, the second an answer to nothing (a late endgame duplicate).
    def answer(r: Request) -> list[Message]:
        block = Piece(r.index, r.begin, arena.block(r.index, r.begin, r.length))
        return [block, block]

    await as_seed(peer)
    await answer_requests(peer, answer)
    return "either"  # a seed meeting a seed may close the connection as redundant


async def choke_flapping(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    await peer.wait_for(lambda m: isinstance(m, Request))
    for _ in range(10):
        await peer.send(*([Choke(), Unchoke()] * 300))
        arena.check_bounded()
    return "open"


async def suggest_and_allowed_fast_past_end(peer: HostilePeer, arena: Arena) -> Expect:
    await as_seed(peer)
    num_pieces = arena.torrent.info.num_pieces
    await peer.send(*(Suggest(num_pieces + i) for i in range(2000)))
    await peer.send(*(AllowedFast(num_pieces + i) for i in range(2000)))
    return "open"


CAMPAIGNS: dict[str, Campaign] = {
    campaign.__name__: campaign
    for campaign in (
        wrong_size_piece,
        oversized_piece,
        piece_past_last_piece,
        unasked_pieces,
        reject_everything,
        never_answer,
        answer_twice,
        choke_flapping,
        suggest_and_allowed_fast_past_end,
    )
}


# -- campaigns against a leecher of a magnet link (BEP 9) -------------------------------------


async def metadata_requests_of(peer: HostilePeer) -> list[MetadataRequest]:
    """The leecher's ut_metadata requests so far."""
    requests = []
    for message in peer.received:
        if isinstance(message, Extended) and message.extended_id == ATTACKER_IDS["ut_metadata"]:
            decoded = decode_metadata_message(message.payload)
            if isinstance(decoded, MetadataRequest):
                requests.append(decoded)
    return requests


async def metadata_size_absurd(peer: HostilePeer, arena: Arena, size: int) -> Expect:
    await peer.send_extended(0, {b"m": ATTACKER_IDS, b"metadata_size": size})
    await as_seed(peer)
    await trio.sleep(0.3)
    return "either"


async def metadata_wrong_total_size(peer: HostilePeer, arena: Arena) -> Expect:
    info = arena.torrent.info.raw
    await peer.send_extended(0, {b"m": ATTACKER_IDS, b"metadata_size": len(info)})
    await peer.wait_until(lambda: bool(_requests_now(peer)))
    ut_metadata = peer.extension_id("ut_metadata")
    assert ut_metadata is not None
    head = encode({b"msg_type": 1, b"piece": 0, b"total_size": len(info) + 1})
    await peer.send_extended(ut_metadata, head + info[:16384])
    return "either"


async def metadata_unasked_and_garbage(peer: HostilePeer, arena: Arena) -> Expect:
    info = arena.torrent.info.raw
    await peer.send_extended(0, {b"m": ATTACKER_IDS, b"metadata_size": len(info)})
    await peer.wait_until(lambda: bool(_requests_now(peer)))
    ut_metadata = peer.extension_id("ut_metadata")
    assert ut_metadata is not None
    # A piece never asked for (past the end), then garbage of the right size for the one
    # asked: it fails the info-hash check and is fetched from someone else.
    head = encode({b"msg_type": 1, b"piece": 3, b"total_size": 4 * 16384})
    await peer.send_extended(ut_metadata, head + bytes(16384))
    garbage = bytes(len(info))
    for request in _requests_now(peer):
        start = request.piece * 16384
        head = encode({b"msg_type": 1, b"piece": request.piece, b"total_size": len(info)})
        await peer.send_extended(ut_metadata, head + garbage[start : start + 16384])
    return "either"


def _requests_now(peer: HostilePeer) -> list[MetadataRequest]:
    requests = []
    for message in peer.received:
        if isinstance(message, Extended) and message.extended_id == ATTACKER_IDS["ut_metadata"]:
            decoded = decode_metadata_message(message.payload)
            if isinstance(decoded, MetadataRequest):
                requests.append(decoded)
    return requests


async def _huge(peer: HostilePeer, arena: Arena) -> Expect:
    return await metadata_size_absurd(peer, arena, 0x7FFFFFFF)


async def _zero(peer: HostilePeer, arena: Arena) -> Expect:
    return await metadata_size_absurd(peer, arena, 0)


async def _negative(peer: HostilePeer, arena: Arena) -> Expect:
    return await metadata_size_absurd(peer, arena, -1)


async def _past_int32(peer: HostilePeer, arena: Arena) -> Expect:
    return await metadata_size_absurd(peer, arena, 1 << 40)


MAGNET_CAMPAIGNS: dict[str, Campaign] = {
    "metadata_size_huge": _huge,
    "metadata_size_zero": _zero,
    "metadata_size_negative": _negative,
    "metadata_size_past_int32": _past_int32,
    "metadata_wrong_total_size": metadata_wrong_total_size,
    "metadata_unasked_and_garbage": metadata_unasked_and_garbage,
}


# -- against a leecher of a v2-only magnet link, fetching piece layers (BEP 52) ---------------


async def serve_metadata(peer: HostilePeer, arena: Arena) -> None:
    """Answer the leecher's ut_metadata requests with the true info dictionary."""
    info = arena.torrent.info.raw
    ut_metadata = peer.extension_id("ut_metadata")
    assert ut_metadata is not None
    for request in _requests_now(peer):
        start = request.piece * 16384
        head = encode({b"msg_type": 1, b"piece": request.piece, b"total_size": len(info)})
        await peer.send_extended(ut_metadata, head + info[start : start + 16384])


async def bad_piece_layers(peer: HostilePeer, arena: Arena) -> Expect:
    # True metadata, so that the leecher asks for piece layers; then hashes and rejects it
    # never asked for (ignored), and the wrong hashes for what it asked: they do not verify
    # against the pieces root, and the liar is dropped.
    info = arena.torrent.info.raw
    await peer.send_extended(0, {b"m": ATTACKER_IDS, b"metadata_size": len(info)})
    await peer.wait_until(lambda: bool(_requests_now(peer)))
    await serve_metadata(peer, arena)
    await as_seed(peer)
    requests = await _hash_requests(peer)
    assert requests, "the leecher asked the attacker for no piece layer"
    roots = [f.pieces_root for f in arena.torrent.info.files if f.pieces_root]
    for root in roots:  # never asked like this
        await peer.send(Hashes(root, 0, 0, 2, 0, bytes(64)), HashReject(root, 5, 0, 2, 0))
    assert await peer.still_open(0.2), "dropped for hashes that answer nothing"
    for r in requests:  # the right shape, the wrong hashes
        wrong = b"\x01" * 32 * (r.length + r.proof_layers)
        await peer.send(
            Hashes(r.pieces_root, r.base_layer, r.index, r.length, r.proof_layers, wrong)
        )
    return "closed"


async def _hash_requests(peer: HostilePeer, after: int = 0) -> list[HashRequest]:
    """The leecher's hash requests past the first ``after``, once there are some (or none
    within a second)."""

    def requests() -> list[HashRequest]:
        return [m for m in peer.received if isinstance(m, HashRequest)][after:]

    with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError):
        await peer.wait_until(lambda: bool(requests()))
    return requests()


async def run_campaign(
    campaign: Campaign,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    *,
    magnet: bool,
    version: Version = "v1",
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(DEADLINE):
        async with (
            arena(tmp_path, magnet=magnet, version=version) as where,
            hostile_peer(
                where.address,
                where.torrent.info.info_hash,
                local_host=ATTACKER_HOST,
                extended_handshake=None if magnet else ExtendedHandshake(m=ATTACKER_IDS),
            ) as peer,
        ):
            expect = await campaign(peer, where)
            where.check_bounded()
            if expect == "closed":
                assert await peer.wait_closed(5.0), "the protocol violation was tolerated"
                assert where.attacker() is None
            elif expect == "open":
                assert await peer.still_open(), "the peer was dropped for nothing wrong"
            assert peer.decode_error is None, peer.decode_error
            # Now an honest seed: the download completes, every byte right.
            where.leecher.handshaker.connect(where.download.info_hash, where.seed)
            await where.download.wait_complete()
            where.check_bounded()
            status = where.download.status()
    assert status.complete
    assert same_files(where.folder, tmp_path / "down" / "album")
    assert not bad_records(caplog.records)


@pytest.mark.parametrize("name", list(CAMPAIGNS))
async def test_campaign_against_a_leecher(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run_campaign(CAMPAIGNS[name], tmp_path, caplog, magnet=False)


@pytest.mark.parametrize("name", list(MAGNET_CAMPAIGNS))
async def test_campaign_against_a_magnet_leecher(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run_campaign(MAGNET_CAMPAIGNS[name], tmp_path, caplog, magnet=True)


async def test_bad_piece_layers_against_a_v2_magnet_leecher(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run_campaign(bad_piece_layers, tmp_path, caplog, magnet=True, version="v2")


# -- random answers (hypothesis) --------------------------------------------------------------

_INDEX = st.one_of(st.integers(min_value=0, max_value=16), st.integers(0, 0xFFFFFFFF))
_MESSAGES = st.one_of(
    st.builds(Have, _INDEX),
    st.builds(Suggest, _INDEX),
    st.builds(AllowedFast, _INDEX),
    st.builds(RejectRequest, _INDEX, st.sampled_from([0, 1, 16384]), st.just(16384)),
    st.builds(Bitfield, st.binary(min_size=2, max_size=2)),
    st.builds(Piece, _INDEX, st.sampled_from([0, 1, 16384]), st.binary(max_size=64)),
    st.builds(
        Extended,
        st.sampled_from([7, 3, 1, 0, 99]),  # lt_donthave, upload_only, ut_pex, handshake, none
        st.one_of(st.binary(max_size=8), _INDEX.map(lambda i: i.to_bytes(4, "big"))),
    ),
    st.sampled_from([HaveAll(), HaveNone(), Choke(), Unchoke(), Interested()]),
)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(messages=st.lists(_MESSAGES, min_size=1, max_size=30))
def test_random_answers_do_not_keep_a_leecher_from_completing(
    messages: list[Message], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The attacker says it has everything, then sends a random sequence as the leecher's
    requests come; the leecher logs no error and completes from the honest seed."""
    errors = BadRecords()
    logging.getLogger().addHandler(errors)
    root = tmp_path_factory.mktemp("random")

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            async with arena(root) as where:
                async with hostile_peer(
                    where.address, where.torrent.info.info_hash, local_host=ATTACKER_HOST
                ) as peer:
                    await as_seed(peer)
                    with contextlib.suppress(trio.BrokenResourceError):
                        await peer.wait_for(lambda m: isinstance(m, Request))
                    await peer.send(*messages)
                    await peer.still_open(0.1)
                    where.check_bounded()
                where.leecher.handshaker.connect(where.download.info_hash, where.seed)
                await where.download.wait_complete()
                assert same_files(where.folder, root / "down" / "album")

    try:
        trio.run(main)
    finally:
        logging.getLogger().removeHandler(errors)
    assert not errors.bad
