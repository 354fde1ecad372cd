"""The KRPC codec against every shared vector: BEP 5 examples and BEP 32/44/51 schemas."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import decode
from bip_dht._krpc import (
    AnnouncePeer,
    ErrorCode,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    Ping,
    Put,
    Response,
    SampleInfohashes,
    decode_message,
)
from bip_handshake._compact import NodeInfo, PeerAddress

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "dht"
DATA: dict[str, Any] = json.loads((VECTORS / "krpc_messages.json").read_text(encoding="utf-8"))
MESSAGES: list[dict[str, Any]] = DATA["vectors"]


def _b(text: str) -> bytes:
    return text.encode("latin-1")


def _keys(wire: bytes, section: bytes) -> set[str]:
    top: Any = decode(wire)
    return {key.decode() for key in top[section]}


def _ids(vector: dict[str, Any]) -> str:
    return f"{vector['method']}-{vector['kind']}"


def test_every_vector_is_covered() -> None:
    kinds = {(vector["method"], vector["kind"].split()[0]) for vector in MESSAGES}
    assert ("ping", "query") in kinds
    assert ("error", "generic") in kinds
    assert len(MESSAGES) >= 10


@pytest.mark.parametrize("vector", MESSAGES, ids=_ids)
def test_hex_and_text_agree(vector: dict[str, Any]) -> None:
    assert bytes.fromhex(vector["bencoded_hex"]) == _b(vector["bencoded"])


@pytest.mark.parametrize("vector", MESSAGES, ids=_ids)
def test_decodes_to_the_documented_fields(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["bencoded_hex"])
    expected = vector["decoded"]
    message = decode_message(data)
    assert message.transaction_id == _b(expected["t"])
    if expected["y"] == "e":
        assert isinstance(message, ErrorReply)
        code, text = expected["e"]
        assert message.code == code
        assert message.message == text
    elif expected["y"] == "q":
        assert expected["q"] == vector["method"]
        args = expected["a"]
        assert message.node_id == _b(args["id"])  # type: ignore[union-attr]
        for key, value in args.items():
            if key == "id":
                continue
            assert getattr(message, key) == (_b(value) if isinstance(value, str) else value)
    else:
        assert isinstance(message, Response)
        body = expected["r"]
        assert message.node_id == _b(body["id"])
        if "token" in body:
            assert message.token == _b(body["token"])
        if "values" in body:
            assert message.values == tuple(PeerAddress.from_compact(_b(v)) for v in body["values"])
        if "nodes" in body:
            raw = _b(body["nodes"])
            if len(raw) % 26:
                # The BEP's placeholder is not compact node info: the message still decodes
                # (the node answered), the key is dropped and reported.
                assert message.nodes is None
                assert message.ignored == (b"nodes",)
            else:  # pragma: no cover - the public vectors only have the placeholder
                assert message.nodes is not None
                assert len(message.nodes) == len(raw) // 26


@pytest.mark.parametrize("vector", MESSAGES, ids=_ids)
def test_encodes_back_byte_for_byte(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["bencoded_hex"])
    message = decode_message(data)
    if isinstance(message, Response) and message.ignored:
        # What was dropped cannot be written back; everything else is.
        expected = decode(data)
        assert isinstance(expected, dict)
        body = expected[b"r"]
        assert isinstance(body, dict)
        for key in message.ignored:
            del body[key]
        assert decode(message.encode()) == expected
    else:
        assert message.encode() == data
    assert decode_message(message.encode()) == message


@pytest.mark.parametrize("vector", MESSAGES, ids=_ids)
def test_the_typed_class_matches_the_method(vector: dict[str, Any]) -> None:
    message = decode_message(bytes.fromhex(vector["bencoded_hex"]))
    expected = {
        ("ping", "query"): Ping,
        ("find_node", "query"): FindNode,
        ("get_peers", "query"): GetPeers,
        ("announce_peer", "query"): AnnouncePeer,
    }.get((vector["method"], vector["kind"]))
    if vector["kind"] == "query":
        assert type(message) is expected
    elif vector["method"] == "error":
        assert type(message) is ErrorReply
    else:
        assert type(message) is Response


def test_announce_peer_with_implied_port() -> None:
    (vector,) = [v for v in MESSAGES if v["method"] == "announce_peer" and v["kind"] == "query"]
    message = decode_message(_b(vector["bencoded"]))
    assert isinstance(message, AnnouncePeer)
    assert message.implied_port is True
    assert message.port == 6881  # kept; the node uses the source port instead


def test_values_decode_as_compact_ipv4_peers() -> None:
    (vector,) = [v for v in MESSAGES if "derived_compact_peer_decoding" in v]
    message = decode_message(_b(vector["bencoded"]))
    assert isinstance(message, Response)
    assert message.values is not None
    derived = vector["derived_compact_peer_decoding"]["values"]
    assert [(peer.host, peer.port) for peer in message.values] == [
        (IPv4Address(entry["ip"]), entry["port"]) for entry in derived
    ]


def test_responses_answer_their_queries() -> None:
    by_kind = {(v["method"], v["kind"]): decode_message(_b(v["bencoded"])) for v in MESSAGES}
    get_peers = by_kind[("get_peers", "query")]
    assert isinstance(get_peers, GetPeers)
    with_peers = by_kind[("get_peers", "response with peers")]
    assert isinstance(with_peers, Response)
    assert with_peers.check_answers(get_peers) is with_peers
    ping = by_kind[("ping", "response")]
    assert isinstance(ping, Response)
    ping_query = by_kind[("ping", "query")]
    assert isinstance(ping_query, Ping)
    ping.check_answers(ping_query)


def test_error_codes_table() -> None:
    for code, _name in ((k, v) for k, v in DATA["error_codes"].items() if k.isdigit()):
        assert ErrorCode(int(code)) == int(code)
    # BEP 44's codes, named in the vectors' source note.
    for code in (205, 206, 207, 301, 302):
        assert ErrorCode(code) == code


def _node(seed: int) -> NodeInfo:
    return NodeInfo(bytes([seed]) * 20, PeerAddress(IPv4Address(f"10.0.0.{seed}"), 6881))


def test_bep44_and_bep51_schemas_round_trip() -> None:
    schemas = DATA["schemas_without_concrete_bytes"]
    node_id = b"i" * 20
    get = Get(transaction_id=b"g1", node_id=node_id, target=b"T" * 20, seq=4)
    assert set(schemas["BEP44_get_query"]["a"]) == {b.decode() for b in (b"id", b"target", b"seq")}
    put = Put(
        transaction_id=b"p1",
        node_id=node_id,
        token=b"tok",
        v=b"Hello World!",
        k=b"k" * 32,
        sig=b"s" * 64,
        seq=1,
        cas=0,
        salt=b"foobar",
    )
    put_keys = _keys(put.encode(), b"a")
    assert put_keys == set(schemas["BEP44_put_query_mutable"]["a"])
    get_response = Response(
        transaction_id=b"g1",
        node_id=node_id,
        token=b"tok",
        v=b"Hello World!",
        k=b"k" * 32,
        sig=b"s" * 64,
        seq=1,
        nodes=(_node(1),),
        nodes6=(),
    )
    response_keys = _keys(get_response.encode(), b"r")
    assert response_keys == set(schemas["BEP44_get_response"]["r"])
    sample = SampleInfohashes(transaction_id=b"s1", node_id=node_id, target=b"T" * 20)
    assert _keys(sample.encode(), b"a") == set(schemas["BEP51_sample_infohashes_query"]["a"])
    samples_response = Response(
        transaction_id=b"s1",
        node_id=node_id,
        interval=21600,
        nodes=(_node(2),),
        num=2,
        samples=(b"a" * 20, b"b" * 20),
    )
    sample_keys = _keys(samples_response.encode(), b"r")
    assert sample_keys == set(schemas["BEP51_sample_infohashes_response"]["r"])
    for message in (get, put, get_response, sample, samples_response):
        assert decode_message(message.encode()) == message
    samples_response.check_answers(sample)
    get_response.check_answers(get)


def test_bep51_empty_samples_are_present() -> None:
    # BEP 51: samples must be sent even when empty, and an empty one decodes as ().
    response = Response(transaction_id=b"x", node_id=bytes(20), samples=(), num=0, interval=0)
    assert b"7:samples0:" in response.encode()
    decoded = decode_message(response.encode())
    assert isinstance(decoded, Response)
    assert decoded.samples == ()
