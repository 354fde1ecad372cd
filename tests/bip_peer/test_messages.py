"""Peer wire messages and MessageDecoder: round trips, limits, zero copy, and hypothesis."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import KNOWN_IDS, messages

from bip_metainfo import PieceSet
from bip_peer._errors import RemoteProtocolError
from bip_peer._messages import (
    BLOCK_SIZE,
    DEFAULT_MAX_MESSAGE_LENGTH,
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    MessageDecoder,
    NeedData,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
    UnknownMessage,
)

ROOT = bytes(range(32))

SAMPLES: list[Message] = [
    KeepAlive(),
    Choke(),
    Unchoke(),
    Interested(),
    NotInterested(),
    Have(0),
    Have(0xFFFFFFFF),
    Bitfield(b""),
    Bitfield(b"\xff\x80"),
    Request(1, 16384, 16384),
    Piece(2, 0, b""),
    Piece(2, 16384, bytes(range(256)) * 64),
    Cancel(1, 16384, 16384),
    Port(0),
    Port(65535),
    Suggest(7),
    HaveAll(),
    HaveNone(),
    RejectRequest(3, 0, 16384),
    AllowedFast(9),
    Extended(0, b"d1:md6:ut_pexi1eee"),
    Extended(255, b""),
    HashRequest(ROOT, 0, 0, 512, 3),
    Hashes(ROOT, 0, 0, 2, 1, bytes(96)),
    Hashes(ROOT, 1, 2, 0, 0, b""),
    HashReject(ROOT, 0, 0, 512, 3),
    UnknownMessage(10, b"\x00\x01"),
    UnknownMessage(255, b""),
]

ALL_CLASSES = {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have,
    Bitfield,
    Request,
    Piece,
    Cancel,
    Port,
    Suggest,
    HaveAll,
    HaveNone,
    RejectRequest,
    AllowedFast,
    Extended,
    HashRequest,
    Hashes,
    HashReject,
    UnknownMessage,
}


def decode_all(decoder: MessageDecoder) -> list[Message]:
    """Every whole message the decoder has."""
    out: list[Message] = []
    while True:
        message = decoder.next_message()
        if message is NEED_DATA:
            return out
        assert isinstance(message, Message)
        out.append(message)


def feed(data: bytes, chunk: int | None = None, **kwargs: int | None) -> list[Message]:
    """Decode ``data`` fed whole or in chunks of ``chunk`` bytes, draining after each."""
    decoder = MessageDecoder(**kwargs)  # type: ignore[arg-type]
    out: list[Message] = []
    step = chunk or max(1, len(data))
    for start in range(0, len(data), step):
        decoder.receive_data(data[start : start + step])
        out += decode_all(decoder)
    assert decoder.buffered == 0
    decoder.receive_eof()
    return out


# ---------------------------------------------------------------------------- round trips


def test_samples_cover_every_class() -> None:
    assert {type(message) for message in SAMPLES} == ALL_CLASSES


@pytest.mark.parametrize("message", SAMPLES, ids=repr)
def test_round_trip_whole(message: Message) -> None:
    (decoded,) = feed(message.encode())
    assert decoded == message
    assert type(decoded) is type(message)
    assert hash(decoded) == hash(message)
    assert repr(decoded) == repr(message)


@pytest.mark.parametrize("message", SAMPLES, ids=repr)
def test_round_trip_byte_by_byte(message: Message) -> None:
    assert feed(message.encode(), chunk=1) == [message]


@pytest.mark.parametrize("message", SAMPLES, ids=repr)
def test_round_trip_with_trailing_data(message: Message) -> None:
    decoder = MessageDecoder()
    trailing = Have(5).encode()[:7]
    decoder.receive_data(message.encode() + trailing)
    assert decoder.next_message() == message
    assert decoder.next_message() is NEED_DATA
    assert decoder.buffered == len(trailing)
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        decoder.receive_eof()


def test_all_samples_back_to_back_in_every_chunk_size() -> None:
    stream = b"".join(message.encode() for message in SAMPLES)
    for chunk in (1, 2, 3, 4, 5, 7, 13, 64, 1000, 16397, 100_000):
        assert feed(stream, chunk=chunk) == SAMPLES


def test_length_prefix_and_id() -> None:
    for message in SAMPLES:
        wire = message.encode()
        assert struct.unpack(">I", wire[:4])[0] == len(wire) - 4
        if message.message_id is None:
            assert wire == b"\x00\x00\x00\x00"
        else:
            assert wire[4] == message.message_id


# ---------------------------------------------------------------------------- piece zero copy


def test_piece_inside_a_chunk_is_a_view_of_that_chunk() -> None:
    block = bytes(range(256)) * 64
    chunk = Have(1).encode() + Piece(3, 16384, block).encode() + Choke().encode()
    decoder = MessageDecoder()
    decoder.receive_data(chunk)
    assert decoder.next_message() == Have(1)
    piece = decoder.next_message()
    assert isinstance(piece, Piece)
    assert isinstance(piece.block, memoryview)
    assert piece.block.obj is chunk  # a slice of the received chunk: no copy
    assert piece.block.readonly
    assert piece.block == block
    assert decoder.next_message() == Choke()


def test_straddling_piece_is_assembled_once_read_only() -> None:
    block = bytes(BLOCK_SIZE)
    wire = Piece(0, 0, block).encode()
    decoder = MessageDecoder()
    decoder.receive_data(wire[:1000])
    assert decoder.next_message() is NEED_DATA
    assert decoder.buffered == 1000
    decoder.receive_data(wire[1000:9000])
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(wire[9000:])
    piece = decoder.next_message()
    assert isinstance(piece, Piece)
    assert isinstance(piece.block, memoryview)
    assert piece.block.readonly
    assert isinstance(piece.block.obj, bytearray)
    assert piece.block == block
    assert hash(piece) == hash(Piece(0, 0, block))


def test_bytearray_chunks_give_read_only_views() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(bytearray(Piece(0, 0, b"abc").encode()))
    piece = decoder.next_message()
    assert isinstance(piece, Piece)
    assert isinstance(piece.block, memoryview)
    assert piece.block.readonly
    assert bytes(piece.block) == b"abc"


def test_piece_encode_parts() -> None:
    block = memoryview(b"x" * BLOCK_SIZE)
    piece = Piece(5, 32768, block)
    head, body = piece.encode_parts()
    assert body is block
    assert head == struct.pack(">IBII", BLOCK_SIZE + 9, 7, 5, 32768)
    assert head + bytes(body) == piece.encode()


def test_piece_repr_hides_the_block() -> None:
    assert repr(Piece(1, 2, bytes(BLOCK_SIZE))) == "Piece(index=1, begin=2, block=<16384 bytes>)"


def test_piece_block_forms() -> None:
    mutable = bytearray(b"abc")
    piece = Piece(0, 0, mutable)  # type: ignore[arg-type]
    mutable[0] = 0
    assert bytes(piece.block) == b"abc"
    assert type(piece.block) is bytes
    wide = memoryview(bytearray(8)).cast("I")
    assert len(Piece(0, 0, wide).block) == 8
    strided = memoryview(b"abcdef")[::2]
    assert Piece(0, 0, strided).block == b"ace"
    with pytest.raises(TypeError):
        Piece(0, 0, "abc")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: Have(-1), ValueError),
        (lambda: Have(1 << 32), ValueError),
        (lambda: Have(True), TypeError),
        (lambda: Have(1.0), TypeError),  # type: ignore[arg-type]
        (lambda: Request(0, 0, -1), ValueError),
        (lambda: Cancel(0, 1 << 32, 0), ValueError),
        (lambda: RejectRequest("0", 0, 0), TypeError),  # type: ignore[arg-type]
        (lambda: Port(65536), ValueError),
        (lambda: Suggest(-5), ValueError),
        (lambda: AllowedFast(None), TypeError),  # type: ignore[arg-type]
        (lambda: Piece(-1, 0, b""), ValueError),
        (lambda: Piece(0, -1, b""), ValueError),
        (lambda: Request(0, 1 << 32, 0), ValueError),
        (lambda: Bitfield("ab"), TypeError),  # type: ignore[arg-type]
        (lambda: Extended(256, b""), ValueError),
        (lambda: Extended(0, "x"), TypeError),  # type: ignore[arg-type]
        (lambda: HashRequest(bytes(31), 0, 0, 0, 0), ValueError),
        (lambda: HashReject(ROOT, -1, 0, 0, 0), ValueError),
        (lambda: Hashes(ROOT, 0, 0, 0, 0, bytes(31)), ValueError),
        (lambda: UnknownMessage(7, b""), ValueError),
        (lambda: UnknownMessage(256, b""), ValueError),
    ],
)
def test_fields_are_checked(build: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()  # type: ignore[operator]


def test_messages_are_frozen_and_hashable() -> None:
    message = Request(1, 2, 3)
    with pytest.raises(AttributeError):
        message.index = 5  # type: ignore[misc]
    assert len({Request(1, 2, 3), Request(1, 2, 3), Cancel(1, 2, 3)}) == 2


def test_byte_fields_become_bytes() -> None:
    mutable: Any = bytearray(b"\x01")
    assert type(Bitfield(mutable).bits) is bytes
    assert type(Extended(1, memoryview(mutable)).payload) is bytes  # type: ignore[arg-type]
    assert type(UnknownMessage(30, mutable).payload) is bytes
    assert type(Hashes(bytearray(ROOT), 0, 0, 0, 0, bytearray(32)).pieces_root) is bytes  # type: ignore[arg-type]


def test_message_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        Message()  # type: ignore[abstract]


def test_need_data_sentinel() -> None:
    assert isinstance(NEED_DATA, NeedData)
    assert repr(NEED_DATA) == "NEED_DATA"


# ---------------------------------------------------------------------------- limits and errors


def test_oversized_length_refused_before_buffering() -> None:
    decoder = MessageDecoder(max_message_length=100)
    decoder.receive_data(struct.pack(">I", 101))
    with pytest.raises(RemoteProtocolError, match="exceeds the limit of 100"):
        decoder.next_message()
    # the decoder is dead from then on
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()
    with pytest.raises(RemoteProtocolError):
        decoder.receive_eof()


def test_oversized_length_refused_from_a_partial_header_stream() -> None:
    decoder = MessageDecoder()
    for byte in struct.pack(">I", DEFAULT_MAX_MESSAGE_LENGTH + 1):
        decoder.receive_data(bytes([byte]))
        if decoder.buffered < 4:
            assert decoder.next_message() is NEED_DATA
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.next_message()


def test_max_message_length_is_inclusive() -> None:
    message = Bitfield(bytes(99))
    assert feed(message.encode(), max_message_length=100) == [message]
    with pytest.raises(RemoteProtocolError):
        feed(Bitfield(bytes(100)).encode(), max_message_length=100)


@pytest.mark.parametrize(
    "wire",
    [
        "000000020021",  # choke with a payload
        "0000000204",  # have without an index
        "00000006040000000000",  # have too long
        "0000000c0600000000000000000000",  # request of 11 bytes
        "0000000e060000000000000000000040000000",  # request of 13 bytes
        "000000020900",  # port of 1 byte
        "000000080700000000000000",  # piece without a full index/begin
        "0000000114",  # extended without an id
        "00000030160000",  # hashes shorter than its fields
        "00000050" + "16" + "00" * 79,  # hashes not a multiple of 32
        "0000002f15" + "00" * 46,  # hash request of 46 bytes
        "0000000e0e" + "00" * 13,  # have all with a payload
    ],
)
def test_malformed_frames(wire: str) -> None:
    data = bytes.fromhex(wire)
    for chunk in (None, 1):
        with pytest.raises(RemoteProtocolError):
            feed(data, chunk=chunk)


def test_fixed_size_refused_from_the_head_alone() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(bytes.fromhex("0000100004"))  # a 4 KiB "have": payload not sent yet
    with pytest.raises(RemoteProtocolError, match="have message with a 4095-byte payload"):
        decoder.next_message()


def test_block_limit_refused_from_the_head_alone() -> None:
    decoder = MessageDecoder(max_block_length=BLOCK_SIZE)
    decoder.receive_data(struct.pack(">IB", BLOCK_SIZE + 10, 7))
    with pytest.raises(RemoteProtocolError, match="16385-byte block"):
        decoder.next_message()
    exact = Piece(0, 0, bytes(BLOCK_SIZE))
    assert feed(exact.encode(), chunk=4096, max_block_length=BLOCK_SIZE) == [exact]
    assert feed(exact.encode(), max_block_length=BLOCK_SIZE) == [exact]
    whole = Piece(0, 0, bytes(BLOCK_SIZE + 1)).encode()  # all in one chunk: the fast path
    with pytest.raises(RemoteProtocolError, match="16385-byte block"):
        feed(whole, max_block_length=BLOCK_SIZE)


def test_bitfield_checked_against_num_pieces() -> None:
    good = Bitfield(PieceSet(10, {0, 9}).to_bitfield())
    assert feed(good.encode(), num_pieces=10) == [good]
    decoder = MessageDecoder(num_pieces=10)
    decoder.receive_data(struct.pack(">IB", 4, 5))  # 3 bytes for 10 pieces: refused at once
    with pytest.raises(RemoteProtocolError, match="bitfield of 3 bytes for 10 pieces"):
        decoder.next_message()
    for chunk in (None, 1):
        with pytest.raises(RemoteProtocolError, match="spare bits"):
            feed(Bitfield(b"\x00\x20").encode(), chunk=chunk, num_pieces=10)
    decoder = MessageDecoder()
    decoder.num_pieces = 8
    assert decoder.num_pieces == 8
    decoder.receive_data(Bitfield(b"\xff").encode())
    assert decoder.next_message() == Bitfield(b"\xff")


def test_decoder_arguments_checked() -> None:
    with pytest.raises(ValueError, match="max_message_length"):
        MessageDecoder(-1)
    with pytest.raises(ValueError, match="max_block_length"):
        MessageDecoder(max_block_length=-1)
    with pytest.raises(TypeError):
        MessageDecoder(num_pieces="3")  # type: ignore[arg-type]
    assert MessageDecoder(5).max_message_length == 5


def test_empty_data_is_ignored_and_eof_between_messages_is_clean() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(b"")
    assert decoder.next_message() is NEED_DATA
    decoder.receive_eof()


def test_unknown_ids_are_tolerated() -> None:
    for mid in range(256):
        if mid in KNOWN_IDS:
            continue
        assert feed(struct.pack(">IB", 3, mid) + b"ab") == [UnknownMessage(mid, b"ab")]


def test_keep_alives_between_chunks() -> None:
    stream = KeepAlive().encode() * 3 + Choke().encode() + KeepAlive().encode()
    for chunk in (1, 2, 3, 5):
        assert feed(stream, chunk=chunk) == [KeepAlive()] * 3 + [Choke(), KeepAlive()]


def test_non_byte_memoryview_input() -> None:
    wire = Have(7).encode() + b"\x00\x00\x00"  # 12 bytes: three 4-byte items
    decoder = MessageDecoder()
    decoder.receive_data(memoryview(bytearray(wire)).cast("I"))
    assert decoder.next_message() == Have(7)
    assert decoder.buffered == 3


# ---------------------------------------------------------------------------- bitfields


# ---------------------------------------------------------------------------- hypothesis


@given(st.lists(messages(), max_size=12), st.data())
def test_random_messages_round_trip_in_random_chunks(
    stream: list[Message], data: st.DataObject
) -> None:
    wire = b"".join(message.encode() for message in stream)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=8)))
    decoder = MessageDecoder()
    out: list[Message] = []
    previous = 0
    for cut in [*cuts, len(wire)]:
        decoder.receive_data(wire[previous:cut])
        previous = cut
        out += decode_all(decoder)
    assert out == stream
    assert decoder.buffered == 0


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_arbitrary_bytes_give_messages_or_our_error(data: bytes, chunk: int) -> None:
    decoder = MessageDecoder(max_message_length=200, max_block_length=100, num_pieces=20)
    consumed = 0
    try:
        for start in range(0, len(data), chunk):
            decoder.receive_data(data[start : start + chunk])
            for message in decode_all(decoder):
                consumed += len(message.encode())
        assert consumed + decoder.buffered == len(data)
    except RemoteProtocolError:
        pass


@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=60)), max_size=8),
)
def test_framed_random_payloads_give_messages_or_our_error(frames: list[tuple[int, bytes]]) -> None:
    wire = b"".join(struct.pack(">IB", len(body) + 1, mid) + body for mid, body in frames)
    try:
        out = feed(wire, chunk=7)
    except RemoteProtocolError:
        return
    assert b"".join(message.encode() for message in out) == wire


def test_payloads_too_long_for_a_length_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 GiB payloads cannot be built in a test: lower the bound the checks compare against
    import bip_peer._messages as messages

    monkeypatch.setattr(messages, "_U32_MAX", 60)
    for build in (
        lambda: Bitfield(bytes(60)),
        lambda: Piece(0, 0, bytes(52)),
        lambda: Extended(0, bytes(59)),
        lambda: Hashes(ROOT, 0, 0, 0, 0, bytes(32)),
        lambda: UnknownMessage(99, bytes(60)),
    ):
        with pytest.raises(ValueError, match=r"do(es)? not fit"):
            build()


@given(st.lists(messages(), max_size=10), st.data())
def test_chunks_queued_before_draining(stream: list[Message], data: st.DataObject) -> None:
    wire = b"".join(message.encode() for message in stream)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=12)))
    decoder = MessageDecoder()
    previous = 0
    for cut in [*cuts, len(wire)]:
        decoder.receive_data(wire[previous:cut])
        previous = cut
    assert decoder.buffered == len(wire)
    assert decode_all(decoder) == stream
    assert decoder.buffered == 0


def test_large_straddling_payload_grows_as_it_arrives() -> None:
    import tracemalloc

    big = Bitfield(bytes(range(256)) * 1024)  # 256 KiB: over the preallocation limit
    wire = big.encode()
    decoder = MessageDecoder()
    tracemalloc.start()
    try:
        decoder.receive_data(wire[:1000])
        assert decoder.next_message() is NEED_DATA
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # not the 256 KiB the length prefix announced
    for start in range(1000, len(wire), 7000):
        decoder.receive_data(wire[start : start + 7000])
        message = decoder.next_message()
    assert message == big
    assert decoder.buffered == 0


def test_block_straddling_preallocated_exactly() -> None:
    wire = Piece(1, 0, bytes(range(256)) * 64).encode()
    for split in (1, 4, 5, 13, 100, len(wire) - 1):
        decoder = MessageDecoder()
        decoder.receive_data(wire[:split])
        assert decoder.next_message() is NEED_DATA
        decoder.receive_data(wire[split:])
        piece = decoder.next_message()
        assert isinstance(piece, Piece)
        assert piece.block == bytes(range(256)) * 64


def test_signed_char_memoryview_input_gives_byte_views() -> None:
    decoder = MessageDecoder()
    decoder.receive_data(memoryview(Piece(0, 0, b"ab").encode()).cast("b"))
    piece = decoder.next_message()
    assert isinstance(piece, Piece)
    assert isinstance(piece.block, memoryview)
    assert piece.block.format == "B"
    assert hash(piece) == hash(Piece(0, 0, b"ab"))
