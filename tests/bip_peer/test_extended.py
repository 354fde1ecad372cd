"""Extension payloads: extended handshake, ut_metadata, ut_pex, lt_donthave, upload_only."""

from __future__ import annotations

import contextlib
import dataclasses
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import extension_messages, handshakes

from bip_bencode import decode, encode
from bip_handshake import PeerAddress
from bip_peer._errors import RemoteProtocolError
from bip_peer._extended import (
    DEFAULT_EXTENSION_IDS,
    DEFAULT_MAX_PEX_ENTRIES,
    EXTENSION_NAMES,
    HANDSHAKE_FIELDS,
    MAX_HANDSHAKE_EXTRA_VALUE_LENGTH,
    MAX_METADATA_TOTAL_SIZE,
    METADATA_PIECE_SIZE,
    DontHave,
    ExtendedHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PexMessage,
    UploadOnly,
    decode_metadata_message,
)
from bip_peer._messages import NEED_DATA, Extended, MessageDecoder

V4 = PeerAddress.parse("1.2.3.4:1286")
V4B = PeerAddress.parse("7.8.9.10:2828")
V6 = PeerAddress.parse("[2001:db8::1]:6881")
MAPPED = PeerAddress.parse("[::ffff:1.2.3.4]:80")


# ---------------------------------------------------------------------------- ids and names


def test_default_extension_ids_are_libtorrents() -> None:
    assert dict(DEFAULT_EXTENSION_IDS) == {
        "ut_pex": 1,
        "ut_metadata": 2,
        "upload_only": 3,
        "lt_donthave": 7,
    }
    assert set(DEFAULT_EXTENSION_IDS) == set(EXTENSION_NAMES)
    assert len(set(DEFAULT_EXTENSION_IDS.values())) == len(DEFAULT_EXTENSION_IDS)
    with pytest.raises(TypeError):
        DEFAULT_EXTENSION_IDS["ut_pex"] = 5  # type: ignore[index]


def test_extension_names() -> None:
    assert MetadataRequest.extension_name == "ut_metadata"
    assert MetadataData.extension_name == "ut_metadata"
    assert MetadataReject.extension_name == "ut_metadata"
    assert PexMessage.extension_name == "ut_pex"
    assert DontHave.extension_name == "lt_donthave"
    assert UploadOnly.extension_name == "upload_only"


def test_to_extended_frames_under_the_given_id() -> None:
    extended = DontHave(9).to_extended(7)
    assert extended == Extended(7, b"\x00\x00\x00\x09")
    decoder = MessageDecoder()
    decoder.receive_data(extended.encode())
    assert decoder.next_message() == extended
    assert decoder.next_message() is NEED_DATA


# ---------------------------------------------------------------------------- handshake


def test_handshake_all_fields_round_trip() -> None:
    handshake = ExtendedHandshake(
        m={"ut_metadata": 2, "ut_pex": 0, "lt_donthave": 7},
        v="µTorrent 1.2",
        p=6881,
        yourip=bytes([127, 0, 0, 1]),
        ipv4=bytes([10, 0, 0, 2]),
        ipv6=bytes(15) + b"\x01",
        reqq=250,
        metadata_size=31235,
        upload_only=False,
        extra={b"complete_ago": 5, b"e": 1, b"x": [b"a", {b"b": 2}]},
    )
    payload = handshake.encode_payload()
    # A received handshake keeps only the small scalars of extra, not the nested x.
    kept = dataclasses.replace(handshake, extra={b"complete_ago": 5, b"e": 1})
    assert ExtendedHandshake.decode_payload(payload) == kept
    fields = decode(payload)
    assert isinstance(fields, dict)
    assert fields[b"upload_only"] == 0
    assert fields[b"m"] == {b"ut_metadata": 2, b"ut_pex": 0, b"lt_donthave": 7}
    assert handshake.extension_id("ut_pex") is None  # 0 disables
    assert handshake.extension_id("lt_donthave") == 7
    assert handshake.yourip_address == IPv4Address("127.0.0.1")


def test_empty_handshake() -> None:
    assert ExtendedHandshake().encode_payload() == b"d1:mdee"
    assert ExtendedHandshake.decode_payload(b"de") == ExtendedHandshake()
    assert ExtendedHandshake(yourip=bytes(16)).yourip_address == IPv6Address("::")
    assert ExtendedHandshake().yourip_address is None


def test_handshake_is_read_only() -> None:
    source = {"ut_pex": 1}
    handshake = ExtendedHandshake(m=source)
    source["ut_pex"] = 9
    assert handshake.m == {"ut_pex": 1}
    with pytest.raises(TypeError):
        handshake.m["x"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        handshake.v = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # reqq as a string: ignored, as libtorrent does
        (b"d4:reqq3:abce", {"reqq": None}),
        (b"d4:reqqi0ee", {"reqq": None}),
        (b"d4:reqqi-5ee", {"reqq": None}),
        (b"d1:pi0ee", {"p": None}),
        (b"d1:pi65536ee", {"p": None}),
        (b"d1:p4:6881e", {"p": None}),
        (b"d1:m4:junke", {"m": {}}),
        (b"d1:mli1eee", {"m": {}}),
        (b"d1:md6:ut_pexi300e11:ut_metadatai2e1:x3:abcee", {"m": {"ut_metadata": 2}}),
        (b"d1:md6:ut_pexi-1e2:\xff\xfei1eee", {"m": {}}),
        (b"d1:vi5ee", {"v": None}),
        (b"d1:v4:\xff\xfeabe", {"v": "\ufffd\ufffdab"}),
        (b"d6:yourip3:abce", {"yourip": None}),
        (b"d6:yourip4:abcde", {"yourip": b"abcd"}),
        (b"d4:ipv46:abcdefe", {"ipv4": None}),
        (b"d4:ipv64:abcde", {"ipv6": None}),
        (b"d13:metadata_sizei0ee", {"metadata_size": None}),
        (b"d13:metadata_size2:10e", {"metadata_size": None}),
        (b"d13:metadata_sizei99999999999ee", {"metadata_size": None}),
        (b"d11:upload_only1:1e", {"upload_only": None}),
        (b"d11:upload_onlyi2ee", {"upload_only": True}),
        (b"d11:upload_onlyi0ee", {"upload_only": False}),
    ],
)
def test_handshake_bad_fields_are_ignored(payload: bytes, expected: dict[str, Any]) -> None:
    handshake = ExtendedHandshake.decode_payload(payload)
    for name, value in expected.items():
        assert getattr(handshake, name) == value
    assert not set(handshake.extra) & {name.encode() for name in HANDSHAKE_FIELDS}
    # whatever was kept encodes again
    assert ExtendedHandshake.decode_payload(handshake.encode_payload()) == handshake


def test_trailing_bytes_after_the_dictionary_are_ignored() -> None:
    assert ExtendedHandshake.decode_payload(b"d1:pi5eexyz").p == 5
    assert PexMessage.decode_payload(b"de\x00") == PexMessage()


def test_handshake_unsorted_keys_accepted() -> None:
    handshake = ExtendedHandshake.decode_payload(b"d1:v1:x1:md6:ut_pexi1eee")
    assert handshake.m == {"ut_pex": 1}
    assert handshake.v == "x"


@pytest.mark.parametrize(
    "payload",
    [b"", b"i1e", b"le", b"4:spam", b"d1:m", b"d" * 100 + b"e" * 100, b"\xff"],
)
def test_handshake_not_a_dictionary(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        ExtendedHandshake.decode_payload(payload)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"m": {"x": 256}}, ValueError),
        ({"m": {"x": -1}}, ValueError),
        ({"m": {b"x": 1}}, TypeError),
        ({"m": {"x": True}}, TypeError),
        ({"m": [("x", 1)]}, TypeError),
        ({"v": b"x"}, TypeError),
        ({"v": "\udc00"}, ValueError),
        ({"m": {"\ud800": 1}}, ValueError),
        ({"p": 0}, ValueError),
        ({"p": 70000}, ValueError),
        ({"yourip": b"abc"}, ValueError),
        ({"yourip": "1.2.3.4"}, TypeError),
        ({"ipv4": bytes(16)}, ValueError),
        ({"ipv6": bytes(4)}, ValueError),
        ({"reqq": 0}, ValueError),
        ({"reqq": "5"}, TypeError),
        ({"metadata_size": 0}, ValueError),
        ({"metadata_size": MAX_METADATA_TOTAL_SIZE + 1}, ValueError),
        ({"upload_only": 1}, TypeError),
        ({"extra": {"s": 1}}, TypeError),
        ({"extra": {b"reqq": 1}}, ValueError),
        ({"extra": {b"x": 1.5}}, ValueError),
        ({"extra": [(b"x", 1)]}, TypeError),
    ],
)
def test_handshake_fields_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ExtendedHandshake(**kwargs)


def test_bep10_example_payloads() -> None:
    # the corrected vector of BEP 10's example (see test_peer_wire_vectors for the file)
    payload = bytes.fromhex(
        "64313a6d6431313a4c545f6d65746164617461693165363a75745f70657869326565313a70693638"
        "383165313a7631333ac2b5546f7272656e7420312e3265"
    )
    handshake = ExtendedHandshake.decode_payload(payload)
    assert handshake.m == {"LT_metadata": 1, "ut_pex": 2}
    assert handshake.p == 6881
    assert handshake.v == "µTorrent 1.2"
    assert handshake.encode_payload() == payload


# ---------------------------------------------------------------------------- ut_metadata


def test_metadata_round_trips() -> None:
    data = bytes(range(256)) * 64
    for message in (
        MetadataRequest(0),
        MetadataRequest(7),
        MetadataReject(3),
        MetadataData(0, 34256, data),
        MetadataData(2, 2 * METADATA_PIECE_SIZE + 10, b"0123456789"),
        MetadataData(0, 1, b"x"),
    ):
        assert decode_metadata_message(message.encode_payload()) == message


def test_metadata_data_follows_the_dictionary() -> None:
    message = MetadataData(1, METADATA_PIECE_SIZE + 3, b"abc")
    payload = message.encode_payload()
    assert payload == b"d8:msg_typei1e5:piecei1e10:total_sizei16387eeabc"
    assert decode_metadata_message(bytearray(payload)) == message
    assert decode_metadata_message(memoryview(payload)) == message


def test_metadata_tolerance() -> None:
    # unknown msg_type: ignored
    assert decode_metadata_message(b"d8:msg_typei3e5:piecei0ee") is None
    # trailing bytes after a request or a reject: ignored
    assert decode_metadata_message(b"d8:msg_typei0e5:piecei1eexyz") == MetadataRequest(1)
    # unsorted keys, extra keys: accepted
    assert decode_metadata_message(b"d5:piecei4e8:msg_typei2e1:xi0ee") == MetadataReject(4)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"le",
        b"i0e",
        b"d8:msg_typei0ee",  # no piece
        b"d5:piecei0ee",  # no msg_type
        b"d8:msg_type1:05:piecei0ee",
        b"d8:msg_typei0e5:piece1:0e",
        b"d8:msg_typei-1e5:piecei0ee",
        b"d8:msg_typei0e5:piecei100000000000000000000ee",  # a request's piece of 21 digits
        b"d8:msg_typei0e5:piecei-100000000000000000000ee",
        b"d8:msg_typei2e5:piecei-1ee",  # a reject of a piece we never ask for
        b"d8:msg_typei2e5:piecei9223372036854775808ee",  # beyond 64 bits
        b"d8:msg_typei1e5:piecei-1e10:total_sizei3eeabc",  # data for a negative piece
        b"d8:msg_typei1e5:piecei999999999e10:total_sizei3eeabc",  # data beyond any dictionary
        b"d8:msg_typei1e5:piecei0eeabc",  # data without total_size
        b"d8:msg_typei1e5:piecei0e10:total_sizei0eeabc",
        b"d8:msg_typei1e5:piecei0e10:total_size1:3eabc",
        b"d8:msg_typei1e5:piecei0e10:total_sizei2eeabc",  # data beyond total_size
        b"d8:msg_typei1e5:piecei1e10:total_sizei100eeabc",  # piece beyond total_size
        b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee" + bytes(METADATA_PIECE_SIZE + 1),
        b"d8:msg_typei1e5:piecei0e10:total_sizei9999999999eeab",
        b"d8:msg_typei0e5:piecei0e",  # truncated
    ],
)
def test_metadata_malformed(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_metadata_message(payload)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MetadataRequest(10**20),
        lambda: MetadataRequest(-(10**20)),
        lambda: MetadataRequest(True),
        lambda: MetadataReject(10**20),
        lambda: MetadataData(-1, 10, b"x"),
        lambda: MetadataData(MAX_METADATA_TOTAL_SIZE, MAX_METADATA_TOTAL_SIZE, b"x"),
        lambda: MetadataData(0, 0, b""),
        lambda: MetadataData(0, 10, b"x" * 11),
        lambda: MetadataData(1, 10, b""),
        lambda: MetadataData(0, 10**9, bytes(METADATA_PIECE_SIZE + 1)),
        lambda: MetadataData(0, 10, "text"),  # type: ignore[arg-type]
    ],
)
def test_metadata_fields_checked(build: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        build()


def test_metadata_repr() -> None:
    assert repr(MetadataData(0, 40000, bytes(METADATA_PIECE_SIZE))) == (
        "MetadataData(piece=0, total_size=40000, data=<16384 bytes>)"
    )


# ---------------------------------------------------------------------------- ut_pex


def test_pex_round_trip_all_lists() -> None:
    message = PexMessage(
        added=(V4, V4B),
        added_flags=(0x01, 0x12),
        added6=(V6, MAPPED),
        added6_flags=(0x04, 0),
        dropped=(PeerAddress.parse("9.9.9.9:0"),),
        dropped6=(V6,),
    )
    payload = message.encode_payload()
    assert PexMessage.decode_payload(payload) == message
    fields = decode(payload)
    assert isinstance(fields, dict)
    assert len(fields[b"dropped"]) == 6  # type: ignore[arg-type]  # IPv4: the BEP 11 erratum
    assert len(fields[b"dropped6"]) == 18  # type: ignore[arg-type]


def test_pex_empty_and_flagless() -> None:
    assert PexMessage().encode_payload() == b"de"
    assert PexMessage.decode_payload(b"de") == PexMessage()
    flagless = PexMessage(added=(V4,))
    assert PexMessage.decode_payload(flagless.encode_payload()) == flagless


def test_pex_lenient_decoding() -> None:
    compact = V4.to_compact() + V4B.to_compact()
    # a partial trailing entry is dropped; flags of the wrong length are ignored
    payload = encode({b"added": compact + b"\x01\x02", b"added.f": b"\x01", b"dropped": 5})
    message = PexMessage.decode_payload(payload)
    assert message.added == (V4, V4B)
    assert message.added_flags == ()
    assert message.dropped == ()
    # a flags value that is not a string
    payload = encode({b"added6": V6.to_compact(), b"added6.f": 3})
    assert PexMessage.decode_payload(payload) == PexMessage(added6=(V6,))


def test_pex_limit() -> None:
    addresses = b"".join(
        PeerAddress(IPv4Address(n), 1).to_compact() for n in range(DEFAULT_MAX_PEX_ENTRIES + 1)
    )
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        PexMessage.decode_payload(encode({b"dropped": addresses}))
    assert len(PexMessage.decode_payload(encode({b"added": addresses[:60]}), max_entries=10).added)
    with pytest.raises(RemoteProtocolError):
        PexMessage.decode_payload(encode({b"added": addresses[:66]}), max_entries=10)


@pytest.mark.parametrize("payload", [b"", b"le", b"d5:added", b"\x00"])
def test_pex_not_a_dictionary(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        PexMessage.decode_payload(payload)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"added": (V6,)}, ValueError),
        ({"added6": (V4,)}, ValueError),
        ({"dropped": (V6,)}, ValueError),
        ({"dropped6": (V4,)}, ValueError),
        ({"added": ("1.2.3.4:5",)}, TypeError),
        ({"added": V4}, TypeError),
        ({"added": (V4,), "added_flags": (1, 2)}, ValueError),
        ({"added": (V4,), "added_flags": (256,)}, ValueError),
        ({"added6": (V6,), "added6_flags": (1, 2)}, ValueError),
        ({"added_flags": b"\x01"}, TypeError),
    ],
)
def test_pex_fields_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        PexMessage(**kwargs)


def test_pex_lists_become_tuples() -> None:
    message = PexMessage(added=[V4], added_flags=[2])  # type: ignore[arg-type]
    assert message.added == (V4,)
    assert message.added_flags == (2,)


# ---------------------------------------------------------------------------- donthave, upload_only


def test_donthave() -> None:
    assert DontHave.decode_payload(b"\xff\xff\xff\xff") == DontHave(0xFFFFFFFF)
    assert DontHave.decode_payload(DontHave(3).encode_payload()) == DontHave(3)
    for bad in (b"", b"\x00\x00\x00", b"\x00" * 5):
        with pytest.raises(RemoteProtocolError):
            DontHave.decode_payload(bad)
    with pytest.raises(ValueError, match="index"):
        DontHave(-1)


def test_upload_only() -> None:
    assert UploadOnly.decode_payload(b"\x00") == UploadOnly(False)
    assert UploadOnly.decode_payload(b"\x07") == UploadOnly(True)
    assert UploadOnly(False).encode_payload() == b"\x00"
    for bad in (b"", b"\x00\x01"):
        with pytest.raises(RemoteProtocolError):
            UploadOnly.decode_payload(bad)
    with pytest.raises(TypeError):
        UploadOnly(1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- hypothesis


@given(handshakes())
def test_random_handshakes_round_trip(handshake: ExtendedHandshake) -> None:
    # Every field comes back; of extra, only the scalars a received handshake keeps.
    small = {
        key: value
        for key, value in handshake.extra.items()
        if (isinstance(value, int) and -(2**63) <= value < 2**63)
        or (isinstance(value, bytes) and len(value) <= MAX_HANDSHAKE_EXTRA_VALUE_LENGTH)
    }
    expected = dataclasses.replace(handshake, extra=small)
    assert ExtendedHandshake.decode_payload(handshake.encode_payload()) == expected


@given(extension_messages())
def test_random_extension_messages_round_trip(message: Any) -> None:
    payload = message.encode_payload()
    if isinstance(message, MetadataRequest | MetadataData | MetadataReject):
        assert decode_metadata_message(payload) == message
    else:
        assert type(message).decode_payload(payload) == message


@given(st.binary(max_size=200))
def test_arbitrary_payloads_give_a_value_or_our_error(payload: bytes) -> None:
    decoders: list[Any] = [
        ExtendedHandshake.decode_payload,
        decode_metadata_message,
        PexMessage.decode_payload,
        DontHave.decode_payload,
        UploadOnly.decode_payload,
    ]
    for decode_payload in decoders:
        with contextlib.suppress(RemoteProtocolError):
            decode_payload(payload)


_values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=12), inner),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(sorted(HANDSHAKE_FIELDS)).map(str.encode) | st.binary(max_size=8),
        _values,
        max_size=8,
    )
)
def test_arbitrary_dictionaries_decode_leniently(fields: dict[bytes, Any]) -> None:
    payload = encode(fields)
    handshake = ExtendedHandshake.decode_payload(payload)
    assert ExtendedHandshake.decode_payload(handshake.encode_payload()) == handshake
    PexMessage.decode_payload(payload)
    with contextlib.suppress(RemoteProtocolError):
        decode_metadata_message(payload)


def test_handshake_repr_shows_what_is_set() -> None:
    assert repr(ExtendedHandshake()) == "ExtendedHandshake(m={})"
    handshake = ExtendedHandshake(m={"ut_pex": 1}, v="x", upload_only=False, extra={b"e": 1})
    assert repr(handshake) == (
        "ExtendedHandshake(m={'ut_pex': 1}, v='x', upload_only=False, extra={b'e': 1})"
    )
