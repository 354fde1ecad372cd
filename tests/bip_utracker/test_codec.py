"""The BEP 15 codec: the shared byte vectors, round trips, and hypothesis on random datagrams."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_utracker._codec import (
    ANNOUNCE_REQUEST_SIZE,
    MAX_SCRAPE_HASHES,
    PROTOCOL_ID,
    Action,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Request,
    Response,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_request,
    decode_response,
)
from bip_utracker._errors import LocalProtocolError, MalformedPacketError
from bip_utracker._options import Option, OptionType

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "tracker"
DATA: dict[str, Any] = json.loads(
    (VECTORS / "udp_tracker_bep15_bep41.json").read_text(encoding="utf-8")
)


def _vector(fragment: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        vector for vector in DATA["vectors"] if fragment in vector["name"]
    ]
    assert len(found) == 1, fragment
    return found[0]


def test_constants_match_the_vectors() -> None:
    constants = DATA["constants"]
    assert int(constants["protocol_id"], 16) == PROTOCOL_ID == constants["protocol_id_decimal"]
    assert PROTOCOL_ID.to_bytes(8, "big").hex() == constants["protocol_id_hex_8_bytes"]
    assert {int(k): v for k, v in constants["actions"].items()} == {
        action.value: action.name.lower() for action in Action
    }
    assert {int(k): v for k, v in constants["events"].items()} == {
        event.value: event.name.lower() for event in AnnounceEvent
    }


def test_announce_request_vector() -> None:
    vector = _vector("announce request")
    raw = bytes.fromhex(vector["hex"])
    assert len(raw) == vector["length"] == ANNOUNCE_REQUEST_SIZE
    fields = vector["fields"]
    request = decode_request(raw)
    assert request == AnnounceRequest(
        connection_id=fields["connection_id"],
        transaction_id=fields["transaction_id"],
        info_hash=bytes.fromhex(fields["info_hash_hex"]),
        peer_id=bytes.fromhex(fields["peer_id_hex"]),
        downloaded=fields["downloaded"],
        left=fields["left"],
        uploaded=fields["uploaded"],
        event=AnnounceEvent(fields["event"]),
        ip=int(IPv4Address(fields["ip"])),
        key=fields["key"],
        num_want=fields["num_want"],
        port=fields["port"],
    )
    assert request.encode() == raw
    # aquatic appends EndOfOptions and a padding byte: accepted, nothing kept.
    assert decode_request(raw + b"\x00\x00") == request


def test_layouts_match_the_packets() -> None:
    layouts = DATA["layouts"]
    assert layouts["connect_request"][-1] == [len(ConnectRequest(1).encode())]
    assert layouts["connect_response"][-1] == [len(ConnectResponse(1, 2).encode())]
    assert layouts["announce_request"][-1] == [ANNOUNCE_REQUEST_SIZE]


def test_scrape_request_without_hashes_is_rejected() -> None:
    vector = _vector("zero info-hashes")
    with pytest.raises(MalformedPacketError, match="no info-hash"):
        decode_request(bytes.fromhex(vector["hex"]))


def test_compact_ipv4_peers_vector() -> None:
    vector = _vector("compact IPv4 peer list")
    header = AnnounceResponse(9, 1800, 1, 2).encode()
    assert len(header) - 8 == _vector("announce response header size")["value"]
    response = decode_response(header + bytes.fromhex(vector["hex"]))
    assert isinstance(response, AnnounceResponse)
    assert [(str(peer.host), peer.port) for peer in response.peers] == [
        tuple(peer) for peer in vector["peers"]
    ]
    assert response.encode() == header + bytes.fromhex(vector["hex"])


def test_short_read_vector() -> None:
    with pytest.raises(MalformedPacketError):
        decode_response(bytes.fromhex(_vector("short read")["hex"]))


def test_connect_request_vector() -> None:
    raw = bytes.fromhex(_vector("connect request")["hex"])
    assert decode_request(raw) == ConnectRequest(0x12345678)
    assert ConnectRequest(0x12345678).encode() == raw


def test_error_response_vector() -> None:
    raw = bytes.fromhex(_vector("error response")["hex"])
    assert decode_response(raw) == ErrorResponse(0x12345678, "x")
    assert ErrorResponse(0x12345678, "x").encode() == raw


@pytest.mark.parametrize("vector", DATA["bep41_vectors"], ids=lambda vector: vector["name"])
def test_bep41_vectors_in_an_announce(vector: dict[str, Any]) -> None:
    head = bytes.fromhex(_vector("announce request")["hex"])
    raw = head + bytes.fromhex(vector["hex"])
    request = decode_request(raw)
    assert isinstance(request, AnnounceRequest)
    assert request.url_data == vector["expected_url_data"].encode()
    # Re-encoding keeps every option but ends at the datagram's end, not at EndOfOptions.
    ends_explicitly = "EndOfOptions" in vector["name"]
    assert request.encode() == (raw[:-1] if ends_explicitly else raw)


def test_error_message_drops_trailing_nuls_and_replaces_bad_utf8() -> None:
    raw = ErrorResponse(5, "").encode() + b"bad \xff\x00\x00"
    assert decode_response(raw) == ErrorResponse(5, "bad \ufffd")


def test_ipv6_announce_response() -> None:
    peers = (PeerAddress(IPv6Address("::1"), 6881), PeerAddress(IPv6Address("2001:db8::2"), 1))
    raw = AnnounceResponse(1, 60, 0, 2, peers).encode()
    assert len(raw) == 20 + 2 * 18
    assert decode_response(raw, family=6) == AnnounceResponse(1, 60, 0, 2, peers)
    # The same bytes over IPv4 are 36 bytes of peers: 6 entries of garbage, not an error,
    # but a length that fits neither stride is refused.
    with pytest.raises(MalformedPacketError, match="IPv6"):
        decode_response(raw[:-1], family=6)
    with pytest.raises(MalformedPacketError, match="IPv4"):
        decode_response(raw[:-1], family=4)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "at least 16"),
        (ConnectRequest(1).encode() + b"\x00", "16 bytes"),
        (bytes(8) + bytes(8), "protocol id"),
        (bytes(8) + b"\x00\x00\x00\x01" + bytes(4), "at least 98"),
        (bytes(8) + b"\x00\x00\x00\x02" + bytes(4 + 21), "stray"),
        (bytes(8) + b"\x00\x00\x00\x02" + bytes(4 + 20 * 75), "at most 74"),
        (bytes(8) + b"\x00\x00\x00\x03" + bytes(4), "action 3"),
        (bytes(8) + b"\xff\xff\xff\xff" + bytes(4), "action"),
    ],
)
def test_malformed_requests(raw: bytes, match: str) -> None:
    with pytest.raises(MalformedPacketError, match=match):
        decode_request(raw)


def test_announce_request_with_unknown_event_or_bad_options() -> None:
    good = bytearray(bytes.fromhex(_vector("announce request")["hex"]))
    # An unknown event is no malformed packet: read as none (test_server_paused.py has more).
    bad_event = bytearray(good)
    bad_event[83] = 5
    decoded = decode_request(bytes(bad_event))
    assert isinstance(decoded, AnnounceRequest)
    assert (decoded.event, decoded.paused) == (AnnounceEvent.NONE, False)
    with pytest.raises(MalformedPacketError, match="no length"):
        decode_request(bytes(good) + b"\x02")
    with pytest.raises(MalformedPacketError, match="declares 3 bytes"):
        decode_request(bytes(good) + b"\x02\x03ab")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00\x00\x00", "at least 8"),
        (ConnectResponse(1, 2).encode()[:-1], "16 bytes"),
        (ConnectResponse(1, 2).encode() + b"\x00", "16 bytes"),
        (AnnounceResponse(1, 2, 3, 4).encode()[:-1], "at least 20"),
        (AnnounceResponse(1, 2, 3, 4).encode() + b"\x00", "20 \\+ 6"),
        (ScrapeResponse(1, (ScrapeStats(1, 2, 3),)).encode()[:-1], "12\\*n"),
        (b"\x00\x00\x00\x04" + bytes(4), "action 4"),
    ],
)
def test_malformed_responses(raw: bytes, match: str) -> None:
    with pytest.raises(MalformedPacketError, match=match):
        decode_response(raw)


def _announce(**changes: Any) -> AnnounceRequest:
    fields: dict[str, Any] = {
        "connection_id": 1,
        "transaction_id": 2,
        "info_hash": b"i" * 20,
        "peer_id": b"p" * 20,
        "downloaded": 0,
        "left": 0,
        "uploaded": 0,
        "event": AnnounceEvent.NONE,
        "ip": 0,
        "key": 0,
        "num_want": -1,
        "port": 6881,
    }
    fields.update(changes)
    return AnnounceRequest(**fields)


@pytest.mark.parametrize(
    "request_",
    [
        ConnectRequest(-1),
        ConnectRequest(2**32),
        _announce(info_hash=b"short"),
        _announce(peer_id=b"p" * 21),
        _announce(port=65536),
        _announce(num_want=2**31),
        _announce(key=-1),
        _announce(url_data="/announce"),
        _announce(url_data=b"/a", options=(Option(OptionType.URL_DATA, b"/b"),)),
        _announce(options=(Option(OptionType.NOP, b"x"),)),
        _announce(options=(Option(256),)),
        _announce(options=(Option(9, b"x" * 256),)),
        ScrapeRequest(1, 2, ()),
        ScrapeRequest(1, 2, (b"h" * 20,) * 75),
        ScrapeRequest(1, 2, (b"h" * 19,)),
    ],
)
def test_encoding_refuses_values_that_do_not_fit(request_: Request) -> None:
    with pytest.raises(LocalProtocolError):
        request_.encode()


@pytest.mark.parametrize(
    "response",
    [
        ConnectResponse(1, 2**64),
        AnnounceResponse(1, 2**31, 0, 0),
        AnnounceResponse(
            1, 2, 3, 4, (PeerAddress.parse("1.2.3.4:5"), PeerAddress.parse("[::1]:5"))
        ),
        ScrapeResponse(1, (ScrapeStats(-(2**31) - 1, 0, 0),)),
        ErrorResponse(2**32, "x"),
        ErrorResponse(1, b"x"),  # type: ignore[arg-type]
    ],
)
def test_encoding_refuses_responses_that_do_not_fit(response: Response) -> None:
    with pytest.raises(LocalProtocolError):
        response.encode()


def test_long_url_data_is_split_into_chunks_and_joined_back() -> None:
    request = _announce(url_data=b"/" + b"q" * 600)
    raw = request.encode()
    assert len(raw) == ANNOUNCE_REQUEST_SIZE + 601 + 3 * 2
    decoded = decode_request(raw)
    assert isinstance(decoded, AnnounceRequest)
    assert decoded.url_data == request.url_data
    assert [len(option.data) for option in decoded.options] == [255, 255, 91]
    assert decoded.encode() == raw


def test_unknown_options_are_kept_and_skipped() -> None:
    options = (Option(OptionType.NOP), Option(9, b"xyz"), Option(OptionType.URL_DATA, b"/a"))
    request = _announce(url_data=b"/a", options=options)
    decoded = decode_request(request.encode() + b"\x00garbage after the end")
    assert decoded == request


def test_announce_ip_address() -> None:
    assert _announce().ip_address is None
    assert _announce(ip=0x7F000002).ip_address == IPv4Address("127.0.0.2")


# --- hypothesis -------------------------------------------------------------------------------

_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_i32 = st.integers(-(2**31), 2**31 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_hash = st.binary(min_size=20, max_size=20)
_option = st.one_of(
    st.just(Option(OptionType.NOP)),
    st.builds(Option, st.integers(2, 255), st.binary(max_size=255)),
)


@st.composite
def _announce_requests(draw: st.DrawFn) -> AnnounceRequest:
    options = tuple(draw(st.lists(_option, max_size=6)))
    url_data = b"".join(option.data for option in options if option.type == OptionType.URL_DATA)
    return AnnounceRequest(
        draw(_u64),
        draw(_u32),
        draw(_hash),
        draw(_hash),
        draw(_i64),
        draw(_i64),
        draw(_i64),
        draw(st.sampled_from(AnnounceEvent)),
        draw(_u32),
        draw(_u32),
        draw(_i32),
        draw(st.integers(0, 65535)),
        url_data,
        options,
    )


_requests = st.one_of(
    st.builds(ConnectRequest, _u32),
    _announce_requests(),
    st.builds(
        ScrapeRequest,
        _u64,
        _u32,
        st.lists(_hash, min_size=1, max_size=MAX_SCRAPE_HASHES).map(tuple),
    ),
)

_v4_peer = st.builds(PeerAddress, st.builds(IPv4Address, _u32), st.integers(0, 65535))
_v6_peer = st.builds(
    PeerAddress, st.builds(IPv6Address, st.integers(0, 2**128 - 1)), st.integers(0, 65535)
)


@given(_requests)
def test_requests_round_trip(request: Request) -> None:
    assert decode_request(request.encode()) == request


@given(
    st.one_of(
        st.builds(ConnectResponse, _u32, _u64),
        st.builds(
            ScrapeResponse, _u32, st.lists(st.builds(ScrapeStats, _i32, _i32, _i32)).map(tuple)
        ),
        st.builds(
            ErrorResponse,
            _u32,
            st.text()
            .filter(lambda text: not text.endswith("\x00"))
            .map(lambda text: text.encode("utf-8", "replace").decode("utf-8")),
        ),
    )
)
def test_responses_round_trip(response: Response) -> None:
    assert decode_response(response.encode()) == response


@given(
    st.integers(0, 1).flatmap(
        lambda v6: st.tuples(
            st.just(6 if v6 else 4),
            st.builds(
                AnnounceResponse,
                _u32,
                _i32,
                _i32,
                _i32,
                st.lists(_v6_peer if v6 else _v4_peer, max_size=50).map(tuple),
            ),
        )
    )
)
def test_announce_responses_round_trip(case: tuple[int, AnnounceResponse]) -> None:
    family, response = case
    assert decode_response(response.encode(), family=6 if family == 6 else 4) == response


_packet_prefixes = st.sampled_from(
    [
        b"",
        PROTOCOL_ID.to_bytes(8, "big") + bytes(4),
        bytes(8) + b"\x00\x00\x00\x01",
        bytes(8) + b"\x00\x00\x00\x02",
        b"\x00\x00\x00\x00",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x02",
        b"\x00\x00\x00\x03",
    ]
)


@given(_packet_prefixes, st.binary(max_size=300))
def test_random_requests_decode_or_raise_ours(prefix: bytes, tail: bytes) -> None:
    try:
        request = decode_request(prefix + tail)
    except MalformedPacketError:
        return
    assert decode_request(request.encode()) == request


@given(_packet_prefixes, st.binary(max_size=300), st.sampled_from([4, 6]))
def test_random_responses_decode_or_raise_ours(prefix: bytes, tail: bytes, family: int) -> None:
    fam: Literal[4, 6] = 6 if family == 6 else 4
    try:
        response = decode_response(prefix + tail, family=fam)
    except MalformedPacketError:
        return
    if not isinstance(response, ErrorResponse):
        assert response.encode() == prefix + tail


def test_decode_response_refuses_an_unknown_family() -> None:
    family: Any = 5
    with pytest.raises(LocalProtocolError):
        decode_response(ConnectResponse(1, 2).encode(), family=family)
