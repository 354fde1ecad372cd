"""Mends in the metadata exchange and in what extension messages may cost.

A private torrent's peers see no ``ut_metadata`` in our extended handshake (as libtorrent,
which adds no ``ut_metadata`` plugin to a private torrent); serving a dictionary again keeps
the peers' request budgets; ``stall_backoff`` is one of the exchange's options; and a peer's
``ut_metadata`` and ``ut_pex`` payloads have their own size limits (libtorrent's 17 KiB for
``ut_metadata``) checked before decoding, and its extended handshakes a per-connection budget.
"""

from __future__ import annotations

from typing import Any

import pytest

from bip_bencode import encode
from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._connection import (
    EXTENDED_HANDSHAKE_MIN_COST,
    MAX_EXTENDED_HANDSHAKE_BYTES,
    PeerConnection,
)
from bip_peer._errors import RemoteProtocolError
from bip_peer._exchange import METADATA_EXTENSION, MetadataExchange
from bip_peer._extended import (
    MAX_EXTENDED_HANDSHAKE_SIZE,
    MAX_METADATA_MESSAGE_SIZE,
    MAX_PEX_MESSAGE_SIZE,
    METADATA_PIECE_SIZE,
    ExtendedHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PexMessage,
    decode_metadata_message,
)
from bip_peer._messages import NEED_DATA, Extended

EXT = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
PUBLIC = encode({b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": bytes(20)})
PRIVATE = encode(
    {b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": bytes(20), b"private": 1}
)
PUBLIC_IH = InfoHash.from_info_bytes(PUBLIC, v1=True)
PRIVATE_IH = InfoHash.from_info_bytes(PRIVATE, v1=True)


class FakePeer:
    """What the exchange reads of a peer: its torrent (hashable by identity, as a Peer)."""

    def __init__(self, info_hash: InfoHash) -> None:
        self.info_hash = info_hash


class FakeManager:
    """Records what the exchange sends."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send_nowait(self, peer: object, message: object) -> bool:
        self.sent.append(message)
        return True


# ------------------------------------------------------------ 1. private: no ut_metadata


@pytest.mark.parametrize("flag", [None, True])  # read here, or given by the caller
def test_a_private_torrent_is_offered_no_ut_metadata(flag: bool | None) -> None:
    exchange = MetadataExchange()
    exchange.serve(PRIVATE_IH, PRIVATE, private=flag)
    peer: Any = FakePeer(PRIVATE_IH)
    assert exchange.handshake_fields(peer) == {}
    # A public torrent is unchanged: the extension and its size.
    exchange.serve(PUBLIC_IH, PUBLIC)
    assert exchange.handshake_fields(FakePeer(PUBLIC_IH)) == {  # type: ignore[arg-type]
        "m": {METADATA_EXTENSION: 2},
        "metadata_size": len(PUBLIC),
    }


def test_stop_serving_forgets_that_a_torrent_is_private() -> None:
    # A torrent removed and added again as a magnet must fetch its dictionary: its peers
    # need our ut_metadata id to answer.
    exchange = MetadataExchange()
    exchange.serve(PRIVATE_IH, PRIVATE)
    exchange.stop_serving(PRIVATE_IH)
    peer: Any = FakePeer(PRIVATE_IH)
    assert exchange.handshake_fields(peer) == {"m": {METADATA_EXTENSION: 2}}


# ---------------------------------------------------- 2. serving again keeps the budgets


async def test_serving_again_keeps_the_peers_request_budgets() -> None:
    exchange = MetadataExchange(serve_burst=2, serve_rate=0.001)
    manager: Any = FakeManager()
    peer: Any = FakePeer(PUBLIC_IH)
    exchange.serve(PUBLIC_IH, PUBLIC)  # as a magnet's fetch does once it has the bytes
    for _ in range(2):
        exchange.message_received(manager, peer, MetadataRequest(0))
    exchange.serve(PUBLIC_IH, PUBLIC, private=False)  # as the session does, parsed
    exchange.message_received(manager, peer, MetadataRequest(0))
    assert [type(message) for message in manager.sent] == [
        MetadataData,
        MetadataData,
        MetadataReject,  # the budget spent before the second serve still counts
    ]
    assert exchange.statistics().serving == 1


# ------------------------------------------------------------- 3. stall_backoff option


def test_stall_backoff_is_an_option_of_the_exchange() -> None:
    exchange = MetadataExchange(stall_backoff=5.0)
    assert exchange._fetcher_options["stall_backoff"] == 5.0
    for bad in (0, -1.0, "60"):
        with pytest.raises(ValueError, match="stall_backoff"):
            MetadataExchange(stall_backoff=bad)  # type: ignore[arg-type]


# ------------------------------------------------ 4. what extension messages may cost


def test_a_ut_metadata_payload_over_17_kib_is_refused_before_decoding() -> None:
    largest = MetadataData(0, METADATA_PIECE_SIZE, bytes(METADATA_PIECE_SIZE)).encode_payload()
    assert len(largest) <= MAX_METADATA_MESSAGE_SIZE == 17 * 1024  # libtorrent's limit
    assert isinstance(decode_metadata_message(largest), MetadataData)
    request = MetadataRequest(0).encode_payload()
    padded = request + bytes(MAX_METADATA_MESSAGE_SIZE - len(request))
    assert decode_metadata_message(padded) == MetadataRequest(0)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decode_metadata_message(padded + b"\0")


def test_a_ut_pex_payload_over_its_limit_is_refused_before_decoding() -> None:
    def payload(size: int) -> bytes:
        pad = size - len(b"d1:x:e") - 5  # a padding string of 5 digits' length
        return b"d1:x%d:%se" % (pad, bytes(pad))

    assert PexMessage.decode_payload(payload(MAX_PEX_MESSAGE_SIZE)) == PexMessage()
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        PexMessage.decode_payload(payload(MAX_PEX_MESSAGE_SIZE + 1))


def connection() -> PeerConnection:
    conn = PeerConnection(
        num_pieces=8, info_hash=InfoHash(v1=bytes(20)), our_extensions=EXT, their_extensions=EXT
    )
    conn.send(ExtendedHandshake(m={"ut_metadata": 2, "ut_pex": 1}))
    return conn


def test_an_oversized_ut_pex_message_ends_the_connection() -> None:
    conn = connection()
    junk = b"d1:zl" + b"le" * (MAX_PEX_MESSAGE_SIZE // 2) + b"ee"
    conn.receive_data(Extended(1, junk).encode())
    with pytest.raises(RemoteProtocolError, match="malformed ut_pex message"):
        conn.next_event()


def test_large_extended_handshakes_are_accepted_up_to_the_budget() -> None:
    pad = MAX_EXTENDED_HANDSHAKE_SIZE - len(b"d1:x:e") - 5
    largest = Extended(0, b"d1:x%d:%se" % (pad, bytes(pad))).encode()
    conn = connection()
    for _ in range(MAX_EXTENDED_HANDSHAKE_BYTES // MAX_EXTENDED_HANDSHAKE_SIZE):
        conn.receive_data(largest)
        assert isinstance(conn.next_event(), ExtendedHandshake)
    conn.receive_data(largest)
    with pytest.raises(RemoteProtocolError, match="extended handshakes"):
        conn.next_event()


def test_small_extended_handshakes_are_counted_at_their_minimum_cost() -> None:
    # Each one a service sees; a real peer sends one or two, of a few hundred bytes.
    small = Extended(0, ExtendedHandshake(m={"ut_pex": 1}).encode_payload()).encode()
    allowed = MAX_EXTENDED_HANDSHAKE_BYTES // EXTENDED_HANDSHAKE_MIN_COST
    conn = connection()
    conn.receive_data(small * allowed)
    for _ in range(allowed):
        assert isinstance(conn.next_event(), ExtendedHandshake)
    assert conn.next_event() is NEED_DATA
    assert conn.their_extension_ids == {"ut_pex": 1}
    conn.receive_data(small)
    with pytest.raises(RemoteProtocolError, match="extended handshakes"):
        conn.next_event()
