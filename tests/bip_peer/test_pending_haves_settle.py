"""Settling what a peer said about its pieces before the piece count was known (a magnet):
the haves and donthaves kept meanwhile (sparse and bounded: test_manager_event_bounds.py) are
checked against the count, the lowest piece past it named, and what fits is merged as before
(checked against a model of the messages)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection
from bip_peer._errors import RemoteProtocolError
from bip_peer._extended import DontHave, ExtendedHandshake
from bip_peer._messages import NEED_DATA, Bitfield, Extended, Have, HaveAll, Message

EXT = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
DONTHAVE_ID = 7


def magnet_connection() -> PeerConnection:
    """A connection without the piece count, which takes lt_donthave under our id 7."""
    conn = PeerConnection(
        num_pieces=None, info_hash=InfoHash(v1=bytes(20)), our_extensions=EXT, their_extensions=EXT
    )
    conn.send(ExtendedHandshake(m={"lt_donthave": DONTHAVE_ID}))
    return conn


def deliver(conn: PeerConnection, *messages: Message) -> None:
    conn.receive_data(b"".join(message.encode() for message in messages))
    while conn.next_event() is not NEED_DATA:
        pass


def donthave(index: int) -> Extended:
    return Extended(DONTHAVE_ID, DontHave(index).encode_payload())


def test_the_first_have_past_the_count_is_named() -> None:
    conn = magnet_connection()
    deliver(conn, Have(3), Have(2000), Have(1003), Have(999), Have(1007))
    with pytest.raises(RemoteProtocolError, match="announced piece 1003 of a 1000-piece"):
        conn.num_pieces = 1000


@pytest.mark.parametrize("num_pieces", [0, 1, 7, 8, 9, 1000])
def test_a_have_just_past_the_end_is_refused(num_pieces: int) -> None:
    conn = magnet_connection()
    deliver(conn, Have(num_pieces))
    with pytest.raises(RemoteProtocolError, match=f"announced piece {num_pieces} of"):
        conn.num_pieces = num_pieces


def test_a_donthave_past_the_end_is_refused_after_the_haves() -> None:
    conn = magnet_connection()
    deliver(conn, donthave(12), Have(3))
    with pytest.raises(RemoteProtocolError, match="dropped piece 12 of a 12-piece"):
        conn.num_pieces = 12


def test_a_have_undone_by_a_donthave_is_not_held_against_the_peer() -> None:
    # The last word on a piece is what counts: a have past the end taken back is no have.
    conn = magnet_connection()
    deliver(conn, Have(5), donthave(20), Have(20), donthave(20))
    with pytest.raises(RemoteProtocolError, match="dropped piece 20"):
        conn.num_pieces = 10
    conn = magnet_connection()
    deliver(conn, donthave(20), Have(20), Have(4))
    with pytest.raises(RemoteProtocolError, match="announced piece 20"):
        conn.num_pieces = 10


_BASES = st.sampled_from(["none", "all", "bitfield"])
_OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 80)), max_size=30)


@given(num_pieces=st.integers(0, 70), base=_BASES, seed=st.integers(0, 2**70), ops=_OPS)
def test_settling_matches_a_model_of_the_messages(
    num_pieces: int, base: str, seed: int, ops: list[tuple[bool, int]]
) -> None:
    conn = magnet_connection()
    model: set[int] = set()
    if base == "all":
        deliver(conn, HaveAll())
        model = set(range(num_pieces))
    elif base == "bitfield":
        model = {i for i in range(num_pieces) if seed >> i & 1}
        bits = bytearray((num_pieces + 7) // 8)
        for i in model:
            bits[i >> 3] |= 0x80 >> (i & 7)
        deliver(conn, Bitfield(bytes(bits)))
    last: dict[int, bool] = {}  # piece -> whether the last word was a have
    for is_have, index in ops:
        deliver(conn, Have(index) if is_have else donthave(index))
        last[index] = is_have
    past_haves = sorted(i for i, have in last.items() if have and i >= num_pieces)
    past_donthaves = sorted(i for i, have in last.items() if not have and i >= num_pieces)
    if past_haves:
        with pytest.raises(RemoteProtocolError, match=f"announced piece {past_haves[0]} of"):
            conn.num_pieces = num_pieces
    elif past_donthaves:
        with pytest.raises(RemoteProtocolError, match=f"dropped piece {past_donthaves[0]} of"):
            conn.num_pieces = num_pieces
    else:
        conn.num_pieces = num_pieces
        model |= {i for i, have in last.items() if have}
        model -= {i for i, have in last.items() if not have}
        assert set(conn.peer_pieces) == model
        assert conn.peer_pieces.count == len(model)
        assert conn.peer_pieces.num_pieces == num_pieces
