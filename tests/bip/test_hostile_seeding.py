"""Hostile peers against a seeding session: a scripted attacker (``_hostile_peer``) completes a
real handshake, then misbehaves with requests, state messages, framing and extensions.

After every campaign: no traceback was logged, the attacker was disconnected where the BEPs or
libtorrent would disconnect (a protocol violation) and kept otherwise, what the session holds
for it stayed under a bound that does not grow with the campaign, and an honest bip session
still downloads the whole torrent from the seed.

Each client has its own 127.0.0.X: the seed .2, the honest leecher .3, the attacker .5.
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
from _engine_helpers import loopback_config, make_torrent, same_files, write_content
from _hostile_peer import ATTACKER_IDS, BadRecords, HostilePeer, bad_records, hostile_peer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip._client import Session, Torrent, TorrentOptions, open_session
from bip_bencode import encode
from bip_handshake import PeerAddress
from bip_metainfo import Metainfo
from bip_peer import (
    DEFAULT_HOLEPUNCH_CONNECT_BURST,
    DEFAULT_HOLEPUNCH_CONNECT_RATE,
    DEFAULT_MAX_PEER_REQUESTS,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    ExtendedHandshake,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    HolepunchMessage,
    Interested,
    Message,
    NotInterested,
    Peer,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
    UnknownMessage,
)

SIZES = (150_000, 60_000)
PIECE_LENGTH = 16384
DEADLINE = 30.0
SEED_HOST = "127.0.0.2"
HONEST_HOST = "127.0.0.3"
ATTACKER_HOST = "127.0.0.5"
#: What the session may hold for the attacker at any time, however long the campaign: its
#: open requests (our reqq) and a few blocks' worth of queued bytes.
MAX_HELD_REQUESTS = DEFAULT_MAX_PEER_REQUESTS
MAX_QUEUED_BYTES = 2 * 1024 * 1024

Expect = Literal["closed", "open", "either"]


@dataclass
class Arena:
    """A seeding session and what a campaign needs to attack it."""

    seeder: Session
    seeding: Torrent
    torrent: Metainfo
    folder: Path
    address: PeerAddress

    @property
    def num_pieces(self) -> int:
        return self.torrent.info.num_pieces

    def attacker(self) -> Peer | None:
        """The seed's connection to the attacker, if it still has one."""
        return next(
            (p for p in self.seeder.manager.peers if str(p.address.host) == ATTACKER_HOST), None
        )

    def check_bounded(self) -> None:
        """What the seed holds for the attacker stays under the campaign-independent bounds."""
        peer = self.attacker()
        if peer is None:
            return
        assert len(peer.connection.peer_requests) <= MAX_HELD_REQUESTS
        assert self.seeder.manager.queued_bytes(peer) <= MAX_QUEUED_BYTES
        assert len(peer.connection.their_extension_ids) <= 256
        assert len(peer.connection.allowed_fast_from_peer) <= 100


@contextlib.asynccontextmanager
async def arena(tmp_path: Path) -> AsyncIterator[Arena]:
    """A hybrid torrent (v1 and v2: every message kind applies) seeded on :data:`SEED_HOST`."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid", piece_length=PIECE_LENGTH)
    async with open_session(loopback_config(listen=((SEED_HOST, 0),))) as seeder:
        seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
        await seeding.wait_complete()
        [address] = seeder.handshaker.listen_addresses
        yield Arena(seeder, seeding, torrent, folder, address)


async def honest_download(arena: Arena, save_dir: Path) -> None:
    """An honest bip session downloads the whole torrent from the seed."""
    async with open_session(loopback_config(listen=((HONEST_HOST, 0),))) as leecher:
        download = await leecher.add_torrent(
            arena.torrent, TorrentOptions(save_dir, peers=(arena.address,), resume=False)
        )
        await download.wait_complete()
    assert same_files(arena.folder, save_dir / "album")


async def unchoked(peer: HostilePeer) -> None:
    """Say interested and wait until the seed unchokes the attacker."""
    await peer.send(Interested())
    await peer.wait_for(lambda m: isinstance(m, Unchoke))


# -- the campaigns ----------------------------------------------------------------------------
# Each takes the connected attacker and the arena, and returns what should have become of the
# connection. Floods are a fixed count: the test checks the bound does not depend on it.

Campaign = Callable[[HostilePeer, Arena], Awaitable[Expect]]
FLOOD = 3000


async def request_past_last_piece(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    await peer.send(Request(arena.num_pieces, 0, 16384))
    return "closed"


async def request_past_piece_end(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    await peer.send(Request(0, PIECE_LENGTH - 100, 16384))
    return "closed"


async def request_huge_offset(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    await peer.send(Request(1, 0xFFFFFFFF, 1))
    return "closed"


async def request_length_zero(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    await peer.send(Request(0, 0, 0))
    return "closed"


async def request_too_long(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    await peer.send(Request(0, 0, 128 * 1024 + 1))
    return "closed"


async def requests_while_choked(peer: HostilePeer, arena: Arena) -> Expect:
    # Never interested, so never unchoked: each is rejected (fast), and a flood past our
    # reqq of them is a protocol error.
    await peer.send_many(Request(i % arena.num_pieces, 0, 16384) for i in range(FLOOD))
    return "closed"


async def requests_before_bitfield(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(Request(0, 0, 16384), Request(1, 0, 16384))
    await peer.wait_for(lambda m: isinstance(m, RejectRequest))
    return "open"


async def duplicate_requests(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    await peer.send_many(Request(0, 0, 16384) for _ in range(FLOOD))
    await peer.wait_for(lambda m: isinstance(m, Piece))
    arena.check_bounded()
    return "open"


async def request_cancel_storm(peer: HostilePeer, arena: Arena) -> Expect:
    await unchoked(peer)
    blocks = [(i, 0, 16384) for i in range(arena.num_pieces)]
    for _ in range(FLOOD // len(blocks)):
        await peer.send_many([Request(*b) for b in blocks] + [Cancel(*b) for b in blocks])
        arena.check_bounded()
    return "open"


async def unasked_pieces_and_rejects(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(Have(0))  # (with everything, it would be closed as a fellow seed)
    await peer.send_many(Piece(i % arena.num_pieces, 0, bytes(16384)) for i in range(200))
    await peer.send_many(RejectRequest(i % arena.num_pieces, 0, 16384) for i in range(FLOOD))
    return "open"


async def bitfield_wrong_length(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(Bitfield(bytes((arena.num_pieces + 7) // 8 + 1)))
    return "closed"


async def bitfield_spare_bits(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(Bitfield(b"\xff" * ((arena.num_pieces + 7) // 8)))
    return "closed"


async def bitfield_twice_and_after_have(peer: HostilePeer, arena: Arena) -> Expect:
    empty = bytes((arena.num_pieces + 7) // 8)
    await peer.send(Have(0), Bitfield(empty), Bitfield(empty), Have(1), Bitfield(empty))
    return "open"


async def have_past_last_piece(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(Have(arena.num_pieces))
    return "closed"


async def have_all_then_have(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(HaveAll(), Have(0), Have(arena.num_pieces - 1))
    return "either"  # a seed meeting a seed may close the connection as redundant


async def allowed_fast_and_suggest_flood(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send_many(
        message
        for i in range(FLOOD)
        for message in (AllowedFast(i % 1000 + arena.num_pieces), Suggest(0xFFFFFFFF - i))
    )
    await peer.send_many(AllowedFast(i % arena.num_pieces) for i in range(FLOOD))
    arena.check_bounded()
    return "open"


async def port_zero(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(Port(0), Port(0), Port(65535))
    return "open"


async def length_prefix_max(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send_raw(b"\xff\xff\xff\xff\x07")
    return "closed"


async def unknown_message_huge(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send_raw((4 * 1024 * 1024 + 1).to_bytes(4, "big") + b"\x63" + bytes(65536))
    return "closed"


async def unknown_message_within_limit(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send(*(UnknownMessage(99, bytes(500_000)) for _ in range(4)))
    return "either"


async def slowloris_request(peer: HostilePeer, arena: Arena) -> Expect:
    # Every message one byte at a time: still read right, and served.
    await peer.send(Interested())
    await peer.wait_for(lambda m: isinstance(m, Unchoke))
    for byte in Request(0, 0, 16384).encode():
        await peer.send_raw(bytes([byte]))
        await trio.sleep(0.01)
    await peer.wait_for(lambda m: isinstance(m, Piece))
    return "open"


async def extended_handshake_garbage(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send_extended(0, b"\xff\xfe garbage")
    return "closed"


async def extended_handshake_not_a_dict(peer: HostilePeer, arena: Arena) -> Expect:
    await peer.send_extended(0, b"li1ei2ee")
    return "closed"


async def extended_handshake_odd_fields(peer: HostilePeer, arena: Arena) -> Expect:
    # Fields of the wrong type or out of range are ignored, as libtorrent ignores them.
    variants: list[dict[bytes, object]] = [
        {b"m": {b"ut_metadata": -1, b"ut_pex": 1 << 40}, b"reqq": 1 << 40},
        {b"m": b"not a dict", b"metadata_size": -5, b"p": 0},
        {b"metadata_size": 0, b"reqq": 0, b"yourip": b"123"},
        {b"metadata_size": 1 << 40, b"v": b"\xff\xfe", b"upload_only": b"x"},
        {b"m": {b"\xff\xfe": 1, b"ut_metadata": 3}},
    ]
    for fields in variants:
        await peer.send_extended(0, fields)
    return "open"


async def extended_handshake_huge_m(peer: HostilePeer, arena: Arena) -> Expect:
    # Each handshake names thousands of extensions nobody has (within the 64 KiB a handshake
    # may take: bip_peer.MAX_EXTENDED_HANDSHAKE_SIZE): what the seed remembers of them must not
    # grow with the number of handshakes.
    for round_ in range(8):
        m = {f"x{round_}_{i}".encode(): i % 255 + 1 for i in range(3_000)}
        await peer.send_extended(0, {b"m": m})
    await peer.send_extended(0, {b"m": ATTACKER_IDS})
    return "open"


async def metadata_requests_bad(peer: HostilePeer, arena: Arena) -> Expect:
    ours = peer.their_handshake or await _their_handshake(peer)
    ut_metadata = ours.extension_id("ut_metadata")
    assert ut_metadata is not None
    # Past the end: rejected (BEP 9), as libtorrent does; the real piece is still served.
    for piece in (10_000, 0):
        await peer.send_extended(ut_metadata, {b"msg_type": 0, b"piece": piece})
    await peer.wait_until(lambda: len(_metadata_replies(peer)) >= 2)
    # Not a piece number at all: rejected by both, bip as libtorrent (a client hanging up
    # would do too).
    for piece in (0xFFFFFFFF, -1):
        await peer.send_extended(ut_metadata, {b"msg_type": 0, b"piece": piece})
    return "either"


def _metadata_replies(peer: HostilePeer) -> list[Message]:
    return [
        m
        for m in peer.received
        if isinstance(m, Extended) and m.extended_id == ATTACKER_IDS["ut_metadata"]
    ]


async def metadata_data_unasked(peer: HostilePeer, arena: Arena) -> Expect:
    ours = peer.their_handshake or await _their_handshake(peer)
    ut_metadata = ours.extension_id("ut_metadata")
    assert ut_metadata is not None
    for total in (1, 1 << 30, 0x7FFFFFFF):
        head = encode({b"msg_type": 1, b"piece": 0, b"total_size": total})
        await peer.send_extended(ut_metadata, head + bytes(min(total, 16384)))
    return "either"


async def pex_floods(peer: HostilePeer, arena: Arena) -> Expect:
    ours = peer.their_handshake or await _their_handshake(peer)
    ut_pex = ours.extension_id("ut_pex")
    assert ut_pex is not None
    me = peer.local_address
    seed = arena.address
    for round_ in range(20):
        added = b"".join(
            # Loopback addresses nobody listens on: a dial of them is refused at once.
            bytes([127, 1 + round_, i >> 8, i & 0xFF]) + (9).to_bytes(2, "big")
            for i in range(900)
        )
        added += me.host.packed + me.port.to_bytes(2, "big")
        added += seed.host.packed + seed.port.to_bytes(2, "big")
        dropped = b"".join(bytes([127, 100 + round_, i >> 8, i & 0xFF, 0, 9]) for i in range(900))
        await peer.send_extended(
            ut_pex, {b"added": added, b"added.f": bytes(len(added) // 6), b"dropped": dropped}
        )
    return "either"


async def holepunch_floods(peer: HostilePeer, arena: Arena) -> Expect:
    ours = peer.their_handshake or await _their_handshake(peer)
    ut_holepunch = ours.extension_id("ut_holepunch")
    assert ut_holepunch is not None  # uTP is on: the seed relays
    # Rendezvous for the seed itself, for the attacker, for nobody connected.
    targets = [arena.address, peer.local_address, PeerAddress.parse("127.0.0.99:9")]
    for i in range(FLOOD):
        message = HolepunchMessage.rendezvous(targets[i % len(targets)])
        await peer.send(message.to_extended(ut_holepunch))
    # Connects to thousands of addresses (nobody listens there): the seed dials a few of
    # them, at the service's rate, never all (it would be a reflector otherwise).
    handshaker = arena.seeder.handshaker
    before, start = handshaker.statistics().outbound_attempts, trio.current_time()
    for i in range(FLOOD):
        target = PeerAddress.parse(f"127.2.{i // 250}.{i % 250 + 1}:9")
        await peer.send(HolepunchMessage.connect(target).to_extended(ut_holepunch))
    await peer.still_open(0.2)
    dials = handshaker.statistics().outbound_attempts - before
    elapsed = trio.current_time() - start
    assert dials <= DEFAULT_HOLEPUNCH_CONNECT_BURST + DEFAULT_HOLEPUNCH_CONNECT_RATE * elapsed + 1
    for raw in (
        b"",
        b"\x00",
        b"\x09\x00" + bytes(6),
        b"\x00\x07" + bytes(6),
        b"\x00\x01" + bytes(4),
    ):
        await peer.send_extended(ut_holepunch, raw)
    return "either"


async def hash_requests_bad(peer: HostilePeer, arena: Arena) -> Expect:
    [root, *_] = [f.pieces_root for f in arena.torrent.info.files if f.pieces_root]
    requests = [
        HashRequest(bytes(32), 0, 0, 2, 0),  # an unknown root
        HashRequest(root, 40, 0, 2, 0),  # a base layer above the root
        HashRequest(root, 0, 7, 2, 0),  # an index not a multiple of the length
        HashRequest(root, 0, 0, 3, 0),  # a length not a power of two
        HashRequest(root, 0, 0, 0xFFFFFFFF, 0),  # huge
        HashRequest(root, 0, 0xFFFFFFF0, 2, 0),  # past the end
        HashRequest(root, 0, 0, 2, 0xFFFFFFFF),  # absurd proof layers
        HashRequest(root, 0, 0, 1 << 20, 0),  # a lot, from the bottom
    ]
    await peer.send(HashRequest(root, 0, 0, 2, 0))  # sound: answered with its two hashes
    answer = await peer.wait_for(lambda m: isinstance(m, Hashes))
    assert isinstance(answer, Hashes)
    assert (answer.index, answer.length, len(answer.hashes)) == (0, 2, 64)
    for _ in range(FLOOD // len(requests)):
        await peer.send(*requests)
    # Hashes we never asked for, too.
    await peer.send(Hashes(root, 0, 0, 2, 0, bytes(64)))
    arena.check_bounded()
    # A sound request is still answered: with its hashes, or a reject once the flood spent
    # the peer's serving budget (per peer: others are served as before).
    await peer.send(HashRequest(root, 0, 0, 4, 2))
    await peer.wait_for(
        lambda m: isinstance(m, Hashes | HashReject) and (m.index, m.length) == (0, 4)
    )
    return "open"


async def _their_handshake(peer: HostilePeer) -> ExtendedHandshake:
    await peer.wait_for(lambda m: isinstance(m, Extended) and m.extended_id == 0)
    assert peer.their_handshake is not None
    return peer.their_handshake


CAMPAIGNS: dict[str, Campaign] = {
    campaign.__name__: campaign
    for campaign in (
        request_past_last_piece,
        request_past_piece_end,
        request_huge_offset,
        request_length_zero,
        request_too_long,
        requests_while_choked,
        requests_before_bitfield,
        duplicate_requests,
        request_cancel_storm,
        unasked_pieces_and_rejects,
        bitfield_wrong_length,
        bitfield_spare_bits,
        bitfield_twice_and_after_have,
        have_past_last_piece,
        have_all_then_have,
        allowed_fast_and_suggest_flood,
        port_zero,
        length_prefix_max,
        unknown_message_huge,
        unknown_message_within_limit,
        slowloris_request,
        extended_handshake_garbage,
        extended_handshake_not_a_dict,
        extended_handshake_odd_fields,
        extended_handshake_huge_m,
        metadata_requests_bad,
        metadata_data_unasked,
        pex_floods,
        holepunch_floods,
        hash_requests_bad,
    )
}


@pytest.mark.parametrize("name", list(CAMPAIGNS))
async def test_campaign_against_a_seed(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(DEADLINE):
        async with (
            arena(tmp_path) as where,
            hostile_peer(where.address, where.seeding.info_hash, local_host=ATTACKER_HOST) as peer,
        ):
            expect = await CAMPAIGNS[name](peer, where)
            where.check_bounded()
            if expect == "closed":
                assert await peer.wait_closed(5.0), "the protocol violation was tolerated"
                assert where.attacker() is None
            elif expect == "open":
                assert await peer.still_open(), "the peer was dropped for nothing wrong"
            else:
                await peer.still_open(0.2)
            assert peer.decode_error is None, peer.decode_error
            await honest_download(where, tmp_path / "honest")
            where.check_bounded()
    assert not bad_records(caplog.records)


# -- random message sequences (hypothesis) ----------------------------------------------------

_U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
_INDEX = st.one_of(st.integers(min_value=0, max_value=20), _U32)
_LENGTH = st.sampled_from([0, 1, 16383, 16384, 16385, 1 << 17, 0xFFFFFFFF])
_MESSAGES = st.one_of(
    st.builds(Request, _INDEX, st.integers(0, 1 << 15), _LENGTH),
    st.builds(Cancel, _INDEX, st.integers(0, 1 << 15), _LENGTH),
    st.builds(RejectRequest, _INDEX, st.integers(0, 1 << 15), _LENGTH),
    st.builds(Have, _INDEX),
    st.builds(Suggest, _INDEX),
    st.builds(AllowedFast, _INDEX),
    st.builds(Bitfield, st.binary(max_size=4)),
    st.builds(Piece, _INDEX, st.integers(0, 1 << 15), st.binary(max_size=64)),
    st.builds(Port, st.integers(0, 0xFFFF)),
    st.builds(Extended, st.integers(0, 6), st.binary(max_size=64)),
    st.builds(UnknownMessage, st.integers(30, 255), st.binary(max_size=64)),
    st.sampled_from([HaveAll(), HaveNone(), Interested(), NotInterested(), Choke(), Unchoke()]),
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(messages=st.lists(_MESSAGES, min_size=1, max_size=40))
def test_random_message_sequences_cost_at_most_the_attacker(
    messages: list[Message], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever the sequence, the seed logs no error, keeps no more than its bounds for the
    attacker, and a second connection is still served a block."""
    errors = BadRecords()
    logging.getLogger().addHandler(errors)

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            await campaign()

    async def campaign() -> None:
        async with arena(tmp_path_factory.mktemp("random")) as where:
            async with hostile_peer(
                where.address, where.seeding.info_hash, local_host=ATTACKER_HOST
            ) as peer:
                await peer.send(*messages)
                await peer.still_open(0.1)
                where.check_bounded()
            async with hostile_peer(
                where.address, where.seeding.info_hash, local_host=HONEST_HOST
            ) as honest:
                await unchoked(honest)
                await honest.send(Request(1, 0, 16384))
                await honest.wait_for(lambda m: isinstance(m, Piece))

    try:
        trio.run(main)
    finally:
        logging.getLogger().removeHandler(errors)
    assert not errors.bad
