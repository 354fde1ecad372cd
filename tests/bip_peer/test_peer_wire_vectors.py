"""The shared peer wire vectors (peer_messages.json) through the bip_peer codecs.

Every vector is classified by what it is, not by its name alone, so that the held-back set from
the same sources is handled the same way: a whole framed message, an invalid stream, a bare
payload (bitfield, request fields, ut_metadata, ut_pex, extended handshake), or something that
is not bytes at all (templates and prose the collectors kept; skipped). The handshake vectors
belong to bip_handshake and are only checked to parse there.
"""

from __future__ import annotations

import json
import re
import struct
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import BencodeDecodeError, decode
from bip_handshake import PROTOCOL_HEADER, Handshake, PeerAddress
from bip_metainfo import PieceSet
from bip_peer._errors import RemoteProtocolError
from bip_peer._extended import (
    ExtendedHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PexMessage,
    decode_metadata_message,
)
from bip_peer._messages import (
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
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "peer_wire"
DATA: dict[str, Any] = json.loads((VECTORS / "peer_messages.json").read_text(encoding="utf-8"))

# The vector file's names for the message ids (its "message_ids" table) to our classes.
CLASSES: dict[int, type[Message]] = {
    0: Choke,
    1: Unchoke,
    2: Interested,
    3: NotInterested,
    4: Have,
    5: Bitfield,
    6: Request,
    7: Piece,
    8: Cancel,
    9: Port,
    13: Suggest,
    14: HaveAll,
    15: HaveNone,
    16: RejectRequest,
    17: AllowedFast,
    20: Extended,
    21: HashRequest,
    22: Hashes,
    23: HashReject,
}


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


# "have all (BEP 6)" -> "have all"; "keepalive" has no id.
TYPE_NAMES: dict[str, type[Message]] = {
    _words(re.sub(r"\(.*?\)", "", name)): CLASSES[int(mid)]
    for mid, name in DATA["message_ids"].items()
}
TYPE_NAMES |= {"keepalive": KeepAlive, "keep alive": KeepAlive, "dht port": Port}


def _type_of(label: str) -> type[Message] | None:
    """The message class a vector's name or ``decoded.type`` names, longest match first."""
    words = _words(label)
    for name in sorted(TYPE_NAMES, key=len, reverse=True):
        if words == name or words.startswith(name + " ") or words.replace(" ", "") == name:
            return TYPE_NAMES[name]
    return None


def _bytes(vector: dict[str, Any]) -> bytes | None:
    try:
        return bytes.fromhex(vector["hex"])
    except ValueError:
        return None


def _is_framed(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack(">I", data[:4])[0] == len(data) - 4


def _decode_one(data: bytes) -> Message:
    decoder = MessageDecoder()
    decoder.receive_data(data)
    message = decoder.next_message()
    assert message is not NEED_DATA
    assert decoder.next_message() is NEED_DATA
    assert decoder.buffered == 0
    assert isinstance(message, Message)
    # byte by byte gives the same
    bytewise = MessageDecoder()
    for byte in data:
        bytewise.receive_data(bytes([byte]))
    assert bytewise.next_message() == message
    return message


def _check_fields(message: object, decoded: dict[str, Any]) -> None:
    for key, value in decoded.items():
        if key in ("type", "payload", "ext_id", "expect"):
            continue
        assert getattr(message, key) == value, key


def _check_pex(payload: bytes, expected: dict[str, Any]) -> None:
    message = PexMessage.decode_payload(payload)
    for key, value in expected.items():
        attribute = key.replace(".f", "_flags")
        got = getattr(message, attribute)
        if isinstance(value, str):  # hex of the raw field
            raw = bytes.fromhex(value)
            if attribute.endswith("_flags"):
                assert got == tuple(raw), key
            else:
                assert b"".join(address.to_compact() for address in got) == raw, key
        else:  # a list of {"ip", "port"}
            assert got == tuple(
                PeerAddress(ip_address(entry["ip"]), entry["port"]) for entry in value
            ), key
    # what we decoded encodes back to a payload that decodes the same
    assert PexMessage.decode_payload(message.encode_payload()) == message


def _check_framed(vector: dict[str, Any], data: bytes) -> None:
    message = _decode_one(data)
    assert message.encode() == data
    decoded = vector.get("decoded", {})
    expected = _type_of(decoded.get("type", "")) or _type_of(vector["name"])
    if expected is not None:
        assert type(message) is expected
    _check_fields(message, decoded)
    if isinstance(message, Extended):
        if "ext_id" in decoded:
            assert message.extended_id == decoded["ext_id"]
        payload = decoded.get("payload")
        if isinstance(payload, dict) and any(
            key.startswith(("added", "dropped")) for key in payload
        ):
            _check_pex(message.payload, payload)
        elif message.extended_id == 0:
            handshake = ExtendedHandshake.decode_payload(message.payload)
            assert ExtendedHandshake.decode_payload(handshake.encode_payload()) == handshake


def _run_to_the_end(decoder: MessageDecoder, chunks: list[bytes]) -> None:
    """Feed every chunk, draining after each, then end the stream."""
    for chunk in chunks:
        decoder.receive_data(chunk)
        while decoder.next_message() is not NEED_DATA:
            pass
    decoder.receive_eof()  # a truncated frame is an error once the stream ends


def _check_invalid_stream(vector: dict[str, Any], data: bytes) -> None:
    limit = re.search(r"max ?length (\d+)", vector["name"], re.IGNORECASE)
    for chunks in ([data], [bytes([byte]) for byte in data]):
        decoder = MessageDecoder(int(limit.group(1))) if limit else MessageDecoder()
        with pytest.raises(RemoteProtocolError):
            _run_to_the_end(decoder, chunks)


def _check_payload(vector: dict[str, Any], data: bytes) -> None:
    decoded: dict[str, Any] = vector.get("decoded", {})
    name = vector["name"].lower()
    note = vector.get("note", "")
    if "set" in decoded and ("num_pieces" in decoded or "bits_len" in decoded):
        num_pieces = int(decoded.get("num_pieces", decoded.get("bits_len", 0)))
        assert list(PieceSet.from_bitfield(data, num_pieces)) == sorted(decoded["set"])
        assert PieceSet(num_pieces, decoded["set"]).to_bitfield() == data
        assert _decode_one(Bitfield(data).encode()) == Bitfield(data)
        return
    if {"index", "begin", "length"} <= set(decoded) and len(data) == 12:
        message = _decode_one(struct.pack(">IB", 13, 6) + data)
        assert isinstance(message, Request)
        _check_fields(message, decoded)
        return
    if "msg_type" in decoded or "ut_metadata" in name:
        _check_metadata(decoded, data, note)
        return
    if any(key.startswith(("added", "dropped")) for key in decoded):
        _check_pex(data, decoded)
        return
    if "pex" in name:
        _check_pex(data, {})
        return
    _check_extended_handshake(data, note)


def _check_metadata(decoded: dict[str, Any], data: bytes, note: str) -> None:
    if not decoded:
        # no decoding given (BEP 9's misprinted reject, msg_type 1 without total_size, is
        # one): refused with our error, or decoded into something that round-trips
        try:
            message = decode_metadata_message(data)
        except RemoteProtocolError:
            return
        if message is not None:
            assert decode_metadata_message(message.encode_payload()) == message
        return
    message = decode_metadata_message(data)
    assert message is not None
    classes: dict[int, type] = {0: MetadataRequest, 1: MetadataData, 2: MetadataReject}
    expected_class = classes[decoded["msg_type"]]
    assert type(message) is expected_class
    assert message.piece == decoded["piece"]
    if isinstance(message, MetadataData):
        assert message.total_size == decoded["total_size"]
        # the metadata bytes follow the dictionary: here none, so the payload is the header
        assert message.encode_payload() == data + message.data
    else:
        assert message.encode_payload() == data


def _check_extended_handshake(data: bytes, note: str) -> None:
    try:
        value = decode(data, lenient=True)
    except BencodeDecodeError:
        # printed bytes that are not bencoding (BEP 10's µT_PEX example): refused, not crashed
        assert "ERRATUM" in note or "negative" in note.lower()
        with pytest.raises(RemoteProtocolError):
            ExtendedHandshake.decode_payload(data)
        return
    assert isinstance(value, dict)
    if b"m" not in value and all(isinstance(v, int) for v in value.values()):
        # the bare ``m`` dictionary BEP 10 prints: wrap it in a handshake
        data = b"d1:m" + data + b"e"
        handshake = ExtendedHandshake.decode_payload(data)
        assert {name.encode(): number for name, number in handshake.m.items()} == value
        for name, number in handshake.m.items():
            assert handshake.extension_id(name) == (number or None)
        return
    handshake = ExtendedHandshake.decode_payload(data)
    assert handshake.encode_payload() == data
    raw_m = value.get(b"m", {})
    assert isinstance(raw_m, dict)
    assert {name.encode(): number for name, number in handshake.m.items()} == raw_m


def _check_handshake(data: bytes) -> None:
    handshake = Handshake.from_bytes(data)
    assert handshake.to_bytes() == data


def _kind(vector: dict[str, Any]) -> str:
    data = _bytes(vector)
    if data is None:
        return "not bytes"
    if data.startswith(PROTOCOL_HEADER):
        return "handshake"
    if "invalid" in vector["name"].lower() or "expect" in vector.get("decoded", {}):
        return "invalid stream"
    if _is_framed(data) and not data.startswith(b"d"):
        return "framed"
    return "payload"


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda vector: vector["name"][:60])
def test_vector(vector: dict[str, Any]) -> None:
    kind = _kind(vector)
    data = _bytes(vector)
    if data is None:
        pytest.skip("a template or prose in the vector file, not bytes")
    if kind == "handshake":
        _check_handshake(data)
    elif kind == "invalid stream":
        _check_invalid_stream(vector, data)
    elif kind == "framed":
        _check_framed(vector, data)
    else:
        _check_payload(vector, data)


def test_every_kind_is_present() -> None:
    kinds = {_kind(vector) for vector in DATA["vectors"]}
    assert kinds == {"not bytes", "handshake", "invalid stream", "framed", "payload"}


def test_every_message_id_in_the_table_is_ours() -> None:
    for mid, name in DATA["message_ids"].items():
        cls = CLASSES[int(mid)]
        assert cls.message_id == int(mid), name


def test_pex_flags_table() -> None:
    flags = {int(key, 16) for key in DATA["bep11_pex_flags"] if key.startswith("0x")}
    peer = PeerAddress.parse("127.0.0.1:1")
    for flag in flags:
        message = PexMessage(added=(peer,), added_flags=(flag,))
        assert PexMessage.decode_payload(message.encode_payload()).added_flags == (flag,)
    # the erratum: "dropped" carries IPv4 (6 bytes per peer), "dropped6" IPv6
    message = PexMessage(dropped=(peer,))
    fields = decode(message.encode_payload())
    assert isinstance(fields, dict)
    assert fields == {b"dropped": peer.to_compact()}
    assert len(peer.to_compact()) == 6
