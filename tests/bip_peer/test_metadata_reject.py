"""A ``ut_metadata`` request for a piece that cannot exist is answered with a reject (BEP 9:
"If the peer does not have the requested piece of metadata ... it MUST respond with a reject
message"; libtorrent's ut_metadata.cpp does so for ``piece < 0`` or past the end), naming the
piece asked for, not with a disconnection; and a flood of them spends the peer's budget as
requests for data do. Only a malformed message (no int ``msg_type`` / ``piece``, a piece of
more than 20 digits) or an answer naming a piece we could never have asked for costs the
connection."""

from __future__ import annotations

import random
from collections.abc import Mapping
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from _managers import Node, connect, handshake_with, node
from hypothesis import given
from hypothesis import strategies as st

from bip_bencode import decode_prefix, encode
from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer._errors import RemoteProtocolError
from bip_peer._exchange import MetadataExchange
from bip_peer._extended import (
    DEFAULT_EXTENSION_IDS,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
)
from bip_peer._manager import MessageReceived, Peer, PeerManager, PeerRemoved
from bip_peer._messages import NEED_DATA, Extended, MessageDecoder
from bip_peer._metadata import MetadataServer

INFO = encode(
    {
        b"length": 1,
        b"name": b"x",
        b"piece length": 16384,
        b"pieces": random.Random(0).randbytes(40_000 // 20 * 20),
    }
)  # three metadata pieces
IH = InfoHash.from_info_bytes(INFO, v1=True)
HUGE = 2**31
LONGEST = 10**20 - 1  # the largest piece of 20 digits


# ------------------------------------------------------------------------------- codec


@pytest.mark.parametrize("piece", [3, 131_072, HUGE, 2**32, 2**63 - 1])
def test_a_request_for_any_index_decodes_and_a_reject_answers_it(piece: int) -> None:
    payload = encode({b"msg_type": 0, b"piece": piece})
    request = decode_metadata_message(payload)
    assert request == MetadataRequest(piece)
    reject = MetadataReject(piece)
    assert decode_metadata_message(reject.encode_payload()) == reject


@pytest.mark.parametrize("piece", [-1, -(2**31), -(2**63), 2**63, LONGEST, -LONGEST])
def test_a_request_for_a_piece_that_is_no_index_decodes_and_its_reject_names_it(
    piece: int,
) -> None:
    request = decode_metadata_message(encode({b"msg_type": 0, b"piece": piece}))
    assert request == MetadataRequest(piece)
    assert MetadataReject(piece).encode_payload() == encode({b"msg_type": 2, b"piece": piece})


@pytest.mark.parametrize("piece", [LONGEST + 1, -LONGEST - 1, 10**30, -(10**4000)])
def test_a_request_of_more_than_20_digits_is_malformed(piece: int) -> None:
    with pytest.raises(RemoteProtocolError, match="20 digits"):
        decode_metadata_message(encode({b"msg_type": 0, b"piece": piece}))
    with pytest.raises(ValueError, match="piece"):
        MetadataRequest(piece)
    with pytest.raises(ValueError, match="piece"):
        MetadataReject(piece)


@pytest.mark.parametrize("piece", [-1, -(2**63), 2**63, LONGEST])
def test_a_reject_of_a_piece_we_never_ask_for_is_a_protocol_error(piece: int) -> None:
    # A reject answers one of our requests, and we ask for pieces 0 and up only.
    with pytest.raises(RemoteProtocolError):
        decode_metadata_message(MetadataReject(piece).encode_payload())


@pytest.mark.parametrize("piece", [-1, -LONGEST])
def test_data_for_a_negative_piece_is_a_protocol_error(piece: int) -> None:
    payload = encode({b"msg_type": 1, b"piece": piece, b"total_size": 100}) + b"abc"
    with pytest.raises(RemoteProtocolError):
        decode_metadata_message(payload)


def test_data_for_a_piece_beyond_any_dictionary_is_a_protocol_error() -> None:
    payload = encode({b"msg_type": 1, b"piece": HUGE, b"total_size": 100}) + b"abc"
    with pytest.raises(RemoteProtocolError):
        decode_metadata_message(payload)


@given(st.integers(min_value=-LONGEST, max_value=LONGEST))
def test_requests_round_trip(piece: int) -> None:
    assert decode_metadata_message(MetadataRequest(piece).encode_payload()) == MetadataRequest(
        piece
    )


@given(st.integers(), st.integers(-1, 3), st.binary(max_size=8))
def test_any_ints_give_a_message_none_or_our_error(piece: int, msg_type: int, tail: bytes) -> None:
    payload = encode({b"msg_type": msg_type, b"piece": piece, b"total_size": 3}) + tail
    try:
        message = decode_metadata_message(payload)
    except RemoteProtocolError:
        return
    assert message is None or message.piece == piece


# ------------------------------------------------------------------------------ server


def test_the_server_rejects_pieces_that_do_not_exist() -> None:
    server: MetadataServer[str] = MetadataServer(INFO)
    for piece in (3, HUGE, 2**63 - 1, -1, -LONGEST, LONGEST):
        assert server.answer("p", MetadataRequest(piece), 0.0) == MetadataReject(piece)
    stats = server.statistics()
    assert (stats.rejected_range, stats.served) == (6, 0)


def test_a_flood_of_impossible_requests_spends_the_peers_budget() -> None:
    server: MetadataServer[str] = MetadataServer(INFO, burst=10, rate=1.0)
    for _ in range(1000):
        assert isinstance(server.answer("flood", MetadataRequest(HUGE), 0.0), MetadataReject)
    # The budget is spent: a valid request is rejected too, until it refills.
    assert server.answer("flood", MetadataRequest(0), 0.0) == MetadataReject(0)
    assert isinstance(server.answer("flood", MetadataRequest(0), 1.0), MetadataData)
    # Another peer is not affected.
    assert isinstance(server.answer("other", MetadataRequest(0), 0.0), MetadataData)
    stats = server.statistics()
    assert (stats.rejected_range, stats.rejected_budget, stats.served) == (1000, 1, 2)


def test_the_budget_never_goes_negative() -> None:
    # Spent to zero and no further: the peer is not punished beyond the bucket's size.
    server: MetadataServer[str] = MetadataServer(INFO, burst=2, rate=1.0)
    for _ in range(50):
        server.answer("p", MetadataRequest(7), 0.0)
    assert isinstance(server.answer("p", MetadataRequest(0), 1.0), MetadataData)


# ------------------------------------------------------------------------ over a manager


class _AsksForMetadata:
    """A peer service that only advertises ut_metadata (so answers can reach it), and lets
    every message through as an event."""

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_metadata": 2}}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


def _join(asker: Node, seed: Node) -> Peer:
    """Connect the two managers in memory; returns the seed as the asker sees it."""
    # The seed knows the asker by its address at 6881, not an ephemeral port.
    peer, _ = connect(asker, seed, info_hash=IH, ephemeral=6881, dialler_id=b"A", listener_id=b"S")
    return peer


async def _answers(asker: Node, count: int) -> list[object]:
    with trio.fail_after(10):
        while True:
            found: list[object] = [
                event.message
                for event in asker.events
                if isinstance(event, MessageReceived)
                and isinstance(event.message, MetadataReject | MetadataData)
            ]
            if len(found) >= count:
                return found
            await trio.sleep(0.05)


@pytest.mark.parametrize("serving", [True, False])
async def test_a_request_for_piece_2_31_gets_a_reject_and_the_peer_stays(
    autojump_clock: trio.testing.MockClock, serving: bool
) -> None:
    exchange = MetadataExchange()
    if serving:
        exchange.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, PeerAddress(IPv4Address("10.0.0.1"), 6881), [exchange]) as seed,
            node(
                nursery, PeerAddress(IPv4Address("10.0.0.2"), 6882), [_AsksForMetadata()]
            ) as asker,
        ):
            peer = _join(asker, seed)
            with trio.fail_after(10):
                while peer.extended_handshake is None:
                    await trio.sleep(0.05)
            assert asker.manager.send_nowait(peer, MetadataRequest(HUGE))
            assert await _answers(asker, 1) == [MetadataReject(HUGE)]
            # Still connected on both sides: a valid request is answered as usual.
            assert asker.manager.send_nowait(peer, MetadataRequest(0))
            second = (await _answers(asker, 2))[1]
            if serving:
                assert isinstance(second, MetadataData)
                assert second.piece == 0
            else:
                assert second == MetadataReject(0)
            assert not any(isinstance(e, PeerRemoved) for e in seed.events + asker.events)
            stats = exchange.statistics()
            assert stats.requests_rejected == (1 if serving else 2)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("piece", [-1, -LONGEST, 2**63, LONGEST])
async def test_a_request_for_a_negative_or_huge_piece_gets_a_reject_and_the_peer_stays(
    autojump_clock: trio.testing.MockClock, piece: int
) -> None:
    # The far end is raw bytes: a bip asker would (rightly) hang up on the reject, which
    # names a piece it never asked for. libtorrent answers such a request so too.
    exchange = MetadataExchange()
    exchange.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with node(nursery, PeerAddress(IPv4Address("10.0.0.1"), 6881), [exchange]) as seed:
            ours, far = trio.testing.memory_stream_pair()
            seed.manager.add_peer(handshake_with(ours, "10.0.0.2", 1, info_hash=IH))
            decoder = MessageDecoder()

            async def ut_metadata_answer() -> Mapping[bytes, object]:
                """The next ut_metadata message the seed sends us, its dictionary."""
                with trio.fail_after(10):
                    while True:
                        message = decoder.next_message()
                        if message is NEED_DATA:
                            data = await far.receive_some()
                            assert data, "the seed hung up"
                            decoder.receive_data(data)
                        elif isinstance(message, Extended) and message.extended_id == 2:
                            head, _ = decode_prefix(message.payload)
                            assert isinstance(head, dict)
                            return head

            await far.send_all(Extended(0, b"d1:md11:ut_metadatai2eee").encode())
            their_id = DEFAULT_EXTENSION_IDS["ut_metadata"]  # what the seed asks us to use
            request = encode({b"msg_type": 0, b"piece": piece})
            await far.send_all(Extended(their_id, request).encode())
            assert await ut_metadata_answer() == {b"msg_type": 2, b"piece": piece}
            # Still connected: a valid request is answered with the data.
            await far.send_all(Extended(their_id, MetadataRequest(0).encode_payload()).encode())
            answer = await ut_metadata_answer()
            assert (answer[b"msg_type"], answer[b"piece"]) == (1, 0)
            assert not seed.removed()
            assert exchange.statistics().requests_rejected == 1
        nursery.cancel_scope.cancel()
