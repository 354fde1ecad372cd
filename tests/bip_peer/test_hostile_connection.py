"""Regressions found by the hostile-peer campaigns (tests/bip/test_hostile_*.py), reduced to
one PeerConnection: what a peer can make it remember is bounded."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from bip_bencode import encode
from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._connection import (
    MAX_EXTENSION_NAME_LENGTH,
    MAX_PEER_EXTENSION_NAMES,
    PeerConnection,
)
from bip_peer._errors import RemoteProtocolError
from bip_peer._extended import (
    EXTENSION_NAMES,
    MAX_CLIENT_VERSION_LENGTH,
    MAX_EXTENDED_HANDSHAKE_SIZE,
    MAX_HANDSHAKE_EXTENSION_NAMES,
    MAX_HANDSHAKE_EXTRA_KEYS,
    MAX_HANDSHAKE_EXTRA_VALUE_LENGTH,
    ExtendedHandshake,
)
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


# ------------------------------------------- what one received extended handshake may cost


def handshake_bytes(payload: bytes) -> bytes:
    return Extended(0, payload).encode()


def test_a_handshake_of_junk_lists_is_not_kept() -> None:
    # The wire hunt's finding, smaller (tracemalloc is slow): thousands of empty lists under an
    # unknown key used to stay in ``extra`` for the connection's life (~34 MB per 1 MiB).
    payload = b"d1:ei1e1:xl" + b"le" * 8000 + b"ee"
    conn = connection()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        conn.receive_data(handshake_bytes(payload))
        assert isinstance(conn.next_event(), ExtendedHandshake)
        assert conn.next_event() is NEED_DATA
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 16_000  # was ~520 kB at this size
    assert conn.their_handshake is not None
    assert dict(conn.their_handshake.extra) == {b"e": 1}


def test_a_handshake_over_the_size_limit_is_refused() -> None:
    for size, refused in (
        (MAX_EXTENDED_HANDSHAKE_SIZE, False),
        (MAX_EXTENDED_HANDSHAKE_SIZE + 1, True),
    ):
        pad = size - len(b"d1:x:e") - 5  # a padding string of 5 digits' length
        payload = b"d1:x%d:%se" % (pad, bytes(pad))
        assert len(payload) == size
        conn = connection()
        conn.receive_data(handshake_bytes(payload))
        if refused:
            with pytest.raises(RemoteProtocolError, match="extended handshake of"):
                conn.next_event()
        else:
            assert isinstance(conn.next_event(), ExtendedHandshake)
    with pytest.raises(RemoteProtocolError):
        ExtendedHandshake.decode_payload(bytes(MAX_EXTENDED_HANDSHAKE_SIZE + 1))


def test_a_received_handshake_keeps_only_small_scalars_in_extra() -> None:
    long_value = b"v" * (MAX_HANDSHAKE_EXTRA_VALUE_LENGTH + 1)
    fields: dict[bytes, object] = {
        b"e": 1,
        b"complete_ago": 5,
        b"neg": -(2**63),
        b"big": 2**63,
        b"short": b"abc",
        b"edge": b"v" * MAX_HANDSHAKE_EXTRA_VALUE_LENGTH,
        b"long": long_value,
        b"list": [1, 2],
        b"dict": {b"a": 1},
        b"k" * (MAX_EXTENSION_NAME_LENGTH + 1): 1,
    }
    handshake = ExtendedHandshake.decode_payload(encode(fields))  # type: ignore[arg-type]
    assert dict(handshake.extra) == {
        b"e": 1,
        b"complete_ago": 5,
        b"neg": -(2**63),
        b"short": b"abc",
        b"edge": b"v" * MAX_HANDSHAKE_EXTRA_VALUE_LENGTH,
    }
    many = {b"x%04d" % i: i for i in range(1000)}
    assert len(ExtendedHandshake.decode_payload(encode(many)).extra) == MAX_HANDSHAKE_EXTRA_KEYS


def test_a_received_handshake_keeps_a_bounded_m_and_v() -> None:
    names = {b"n%04d" % i: i % 255 + 1 for i in range(1000)}
    names[b"x" * (MAX_EXTENSION_NAME_LENGTH + 1)] = 5
    handshake = ExtendedHandshake.decode_payload(encode({b"m": names, b"v": b"v" * 10_000}))
    assert len(handshake.m) == MAX_HANDSHAKE_EXTENSION_NAMES
    assert all(len(name) <= MAX_EXTENSION_NAME_LENGTH for name in handshake.m)
    assert handshake.v == "v" * MAX_CLIENT_VERSION_LENGTH
    # The peer's names are all still usable by the connection: the id table takes fewer.
    assert MAX_PEER_EXTENSION_NAMES + len(EXTENSION_NAMES) < MAX_HANDSHAKE_EXTENSION_NAMES


def test_our_own_raw_handshake_is_kept_whole() -> None:
    conn = connection()
    nested = {b"m": {b"ut_pex": 1}, b"x": [b"a", {b"b": 2}], b"y": b"z" * 1000}
    conn.send(Extended(0, encode(nested)))  # type: ignore[arg-type]
    assert conn.our_handshake is not None
    assert dict(conn.our_handshake.extra) == {b"x": [b"a", {b"b": 2}], b"y": b"z" * 1000}


def test_repeated_handshakes_do_not_pile_up() -> None:
    conn = connection()
    payload = b"d1:xl" + b"le" * 1000 + b"e1:ei1ee"
    for _ in range(50):
        conn.receive_data(handshake_bytes(payload))
        assert isinstance(conn.next_event(), ExtendedHandshake)
    assert conn.next_event() is NEED_DATA
    assert conn.their_handshake is not None
    assert dict(conn.their_handshake.extra) == {b"e": 1}
