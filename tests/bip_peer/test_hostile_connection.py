"""Regressions found by the hostile-peer campaigns (tests/bip/test_hostile_*.py), reduced to
one PeerConnection: what a peer can make it remember is bounded."""

from __future__ import annotations

from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._connection import (
    MAX_EXTENSION_NAME_LENGTH,
    MAX_PEER_EXTENSION_NAMES,
    PeerConnection,
)
from bip_peer._extended import ExtendedHandshake
from bip_peer._messages import NEED_DATA, Extended

EXT = Extensions.FAST | Extensions.EXTENSION_PROTOCOL


def connection() -> PeerConnection:
    conn = PeerConnection(
        num_pieces=8, info_hash=InfoHash(v1=bytes(20)), our_extensions=EXT, their_extensions=EXT
    )
    conn.send(ExtendedHandshake(m={"ut_metadata": 2, "ut_pex": 1, "ut_holepunch": 4}))
    return conn


def receive(conn: PeerConnection, m: dict[str, int]) -> None:
    conn.receive_data(Extended(0, ExtendedHandshake(m=m).encode_payload()).encode())
    assert isinstance(conn.next_event(), ExtendedHandshake)
    assert conn.next_event() is NEED_DATA


def test_made_up_extension_names_do_not_accumulate_over_handshakes() -> None:
    conn = connection()
    for round_ in range(20):
        receive(conn, {f"junk{round_}_{i}": i % 255 + 1 for i in range(1000)})
    assert len(conn.their_extension_ids) <= MAX_PEER_EXTENSION_NAMES
    # A name we speak is still taken after the junk, and so is a change of a kept one's id.
    receive(conn, {"ut_pex": 9, "ut_metadata": 3, "junk0_1": 77})
    assert conn.their_extension_ids["ut_pex"] == 9
    assert conn.their_extension_ids["ut_metadata"] == 3
    assert conn.their_extension_ids["junk0_1"] == 77
    assert len(conn.their_extension_ids) <= MAX_PEER_EXTENSION_NAMES + 2
    # 0 still disables, which frees room for another name.
    receive(conn, {"ut_pex": 0, "junk0_1": 0})
    assert "ut_pex" not in conn.their_extension_ids
    receive(conn, {"late": 5})
    assert conn.their_extension_ids["late"] == 5


def test_overlong_extension_names_are_ignored() -> None:
    conn = connection()
    receive(conn, {"x" * (MAX_EXTENSION_NAME_LENGTH + 1): 5, "x" * MAX_EXTENSION_NAME_LENGTH: 6})
    assert dict(conn.their_extension_ids) == {"x" * MAX_EXTENSION_NAME_LENGTH: 6}


def test_a_name_we_speak_is_taken_even_when_the_others_are_full() -> None:
    conn = connection()
    receive(conn, {f"a{i}": 1 for i in range(MAX_PEER_EXTENSION_NAMES)})
    receive(conn, {"ut_holepunch": 4, "b": 2})
    assert conn.their_extension_ids["ut_holepunch"] == 4
    assert "b" not in conn.their_extension_ids
