"""The KRPC codec: round trips of every message type, tolerance, bounds and hostile input."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import Value, encode
from bip_dht._bloom import BLOOM_BYTES
from bip_dht._errors import KRPCError, LocalProtocolError
from bip_dht._krpc import (
    DEFAULT_LIMITS,
    WANT_N4,
    WANT_N6,
    AnnouncePeer,
    ErrorCode,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    KRPCLimits,
    KRPCQueryError,
    Message,
    Ping,
    Put,
    Response,
    SampleInfohashes,
    UnknownQuery,
    decode_message,
    wanted_families,
)
from bip_handshake._compact import NodeInfo, PeerAddress

ROOMY = KRPCLimits(max_datagram=1 << 20, max_depth=64)
ID = b"abcdefghij0123456789"
TARGET = b"mnopqrstuvwxyz123456"

# --- strategies -------------------------------------------------------------------------------

ids = st.binary(min_size=20, max_size=20)
tids = st.binary(max_size=8)
ports = st.integers(0, 0xFFFF)
ipv4 = st.builds(PeerAddress, st.integers(0, 2**32 - 1).map(IPv4Address), ports)
ipv6 = st.builds(PeerAddress, st.integers(0, 2**128 - 1).map(IPv6Address), ports)
addresses = ipv4 | ipv6
nodes4 = st.builds(NodeInfo, ids, ipv4)
nodes6 = st.builds(NodeInfo, ids, ipv6)
values: st.SearchStrategy[Value] = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.binary(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)
wants = st.none() | st.lists(st.sampled_from([WANT_N4, WANT_N6, b"n5", b""]), max_size=3).map(tuple)


def _extra(known: frozenset[bytes]) -> st.SearchStrategy[dict[bytes, Value]]:
    keys = st.binary(min_size=1, max_size=8).filter(lambda key: key not in known)
    return st.dictionaries(keys, values, max_size=3)


def _common() -> dict[str, Any]:
    return {
        "transaction_id": tids,
        "version": st.none() | st.binary(max_size=4),
        "ip": st.none() | addresses,
        "read_only": st.booleans(),
    }


def _query(cls: Any, **fields: Any) -> st.SearchStrategy[Any]:
    return st.builds(cls, node_id=ids, extra=_extra(cls.known), **fields, **_common())


pings = _query(Ping)
find_nodes = _query(FindNode, target=ids, want=wants)
get_peers = _query(GetPeers, info_hash=ids, want=wants, noseed=st.booleans(), scrape=st.booleans())
announces = _query(
    AnnouncePeer,
    info_hash=ids,
    port=ports,
    token=st.binary(max_size=20),
    implied_port=st.booleans(),
    seed=st.booleans(),
)
gets = _query(Get, target=ids, seq=st.none() | st.integers(-(2**63), 2**63 - 1), want=wants)
immutable_puts = _query(Put, token=st.binary(max_size=20), v=values)
mutable_puts = _query(
    Put,
    token=st.binary(max_size=20),
    v=values,
    k=st.binary(min_size=32, max_size=32),
    sig=st.binary(min_size=64, max_size=64),
    seq=st.integers(-(2**63), 2**63 - 1),
    cas=st.none() | st.integers(0, 2**63),
    salt=st.binary(max_size=64),
)
samples_queries = _query(SampleInfohashes, target=ids, want=wants)
unknown_queries = _query(
    UnknownQuery,
    name=st.binary(max_size=20).filter(
        lambda name: (
            name
            not in {b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put"}
            | {b"sample_infohashes"}
        )
    ),
)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


responses = st.builds(
    Response,
    node_id=ids,
    nodes=_optional(st.lists(nodes4, max_size=8).map(tuple)),
    nodes6=_optional(st.lists(nodes6, max_size=8).map(tuple)),
    values=_optional(st.lists(addresses, max_size=8).map(tuple)),
    token=_optional(st.binary(max_size=20)),
    samples=_optional(st.lists(ids, max_size=8).map(tuple)),
    num=_optional(st.integers(0, 2**40)),
    interval=_optional(st.integers(0, 21600)),
    v=_optional(values),
    k=_optional(st.binary(min_size=32, max_size=32)),
    sig=_optional(st.binary(min_size=64, max_size=64)),
    seq=_optional(st.integers(-(2**63), 2**63 - 1)),
    bfsd=_optional(st.binary(min_size=BLOOM_BYTES, max_size=BLOOM_BYTES)),
    bfpe=_optional(st.binary(min_size=BLOOM_BYTES, max_size=BLOOM_BYTES)),
    extra=_extra(
        frozenset(
            {b"id", b"nodes", b"nodes6", b"values", b"token", b"samples", b"num", b"interval"}
            | {b"v", b"k", b"sig", b"seq", b"BFsd", b"BFpe"}
        )
    ),
    **_common(),
)
errors = st.builds(
    ErrorReply,
    code=st.sampled_from(list(ErrorCode)) | st.integers(-(2**40), 2**40),
    message=st.text(max_size=40),
    **_common(),
)

ALL = {
    "ping": pings,
    "find_node": find_nodes,
    "get_peers": get_peers,
    "announce_peer": announces,
    "get": gets,
    "immutable put": immutable_puts,
    "mutable put": mutable_puts,
    "sample_infohashes": samples_queries,
    "unknown query": unknown_queries,
    "response": responses,
    "error": errors,
}


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_message_type_round_trips(name: str, data: st.DataObject) -> None:
    message: Message = data.draw(ALL[name])
    wire = message.encode()
    decoded = decode_message(wire, ROOMY)
    assert decoded == message
    assert type(decoded) is type(message)
    assert decoded.encode() == wire
    if isinstance(decoded, Response):
        assert decoded.ignored == ()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600))
def test_arbitrary_bytes_give_a_message_or_krpc_error(data: bytes) -> None:
    with contextlib.suppress(KRPCError):
        decode_message(data)


SAMPLE = b"sample_infohashes"
_TOP_KEYS = [b"t", b"y", b"q", b"a", b"r", b"e", b"v", b"ip", b"ro", b"zz"]
_INNER_KEYS = [
    b"id",
    b"target",
    b"info_hash",
    b"want",
    b"port",
    b"implied_port",
    b"token",
    b"nodes",
    b"nodes6",
    b"values",
    b"samples",
    b"num",
    b"interval",
    b"v",
    b"k",
    b"sig",
    b"seq",
    b"cas",
    b"salt",
    b"BFsd",
    b"BFpe",
    b"noseed",
    b"scrape",
    b"seed",
    b"other",
]
_shaped = (
    st.sampled_from([b"q", b"r", b"e", b"x"])
    | st.sampled_from(
        [b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put", b"vote", SAMPLE]
    )
    | st.binary(min_size=20, max_size=20)
    | st.binary(min_size=26, max_size=26)
    | st.binary(min_size=6, max_size=6)
    | st.binary(min_size=18, max_size=18)
    | st.binary(min_size=32, max_size=32)
    | st.binary(min_size=64, max_size=64)
    | st.integers(-70000, 70000)
    | st.lists(st.binary(max_size=20) | st.integers(), max_size=4)
    | values
)
_inner = st.dictionaries(st.sampled_from(_INNER_KEYS), _shaped, max_size=10)
_loose_tops = st.dictionaries(st.sampled_from(_TOP_KEYS), _shaped | _inner, max_size=8)


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # one_of flattens unions, so a plain `good | _shaped` would draw `good` rarely.
    return st.integers(0, 3).flatmap(lambda pick: good if pick else _shaped)


_compact_nodes = st.lists(nodes4, max_size=3).map(lambda ns: b"".join(n.to_compact() for n in ns))
_compact_nodes6 = st.lists(nodes6, max_size=3).map(lambda ns: b"".join(n.to_compact() for n in ns))
_flags = st.integers(0, 1)
_good_args: dict[bytes, st.SearchStrategy[Any]] = {
    b"id": ids,
    b"target": ids,
    b"info_hash": ids,
    b"want": st.lists(st.sampled_from([WANT_N4, WANT_N6, b"x"]), max_size=3),
    b"port": ports,
    b"implied_port": _flags,
    b"token": st.binary(max_size=8),
    b"nodes": _compact_nodes,
    b"nodes6": _compact_nodes6,
    b"values": st.lists(addresses.map(PeerAddress.to_compact), max_size=3),
    b"samples": st.lists(ids, max_size=3).map(b"".join),
    b"num": st.integers(0, 100),
    b"interval": st.integers(0, 21600),
    b"v": values,
    b"k": st.binary(min_size=32, max_size=32),
    b"sig": st.binary(min_size=64, max_size=64),
    b"seq": st.integers(-5, 5),
    b"cas": st.integers(0, 5),
    b"salt": st.binary(max_size=8),
    b"BFsd": st.binary(min_size=BLOOM_BYTES, max_size=BLOOM_BYTES),
    b"BFpe": st.binary(min_size=BLOOM_BYTES, max_size=BLOOM_BYTES),
    b"noseed": _flags,
    b"scrape": _flags,
    b"seed": _flags,
    b"other": values,
}
# Mostly well-formed envelopes and bodies with hostile parts, so every decoder path is reached.
_bodies = st.fixed_dictionaries(
    {b"id": _mostly(ids)},
    optional={key: _mostly(good) for key, good in _good_args.items() if key != b"id"},
)
_methods = st.sampled_from(
    [b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put", b"vote", SAMPLE]
)
_advisory = {
    b"v": _mostly(st.binary(max_size=4)),
    b"ip": _mostly(addresses.map(PeerAddress.to_compact)),
    b"ro": _mostly(_flags),
}
_error_bodies = st.lists(st.integers(0, 400) | st.binary(max_size=8), max_size=3)
_structured_tops = st.one_of(
    st.fixed_dictionaries(
        {b"t": tids, b"y": st.just(b"q"), b"q": _mostly(_methods), b"a": _mostly(_bodies)},
        optional=_advisory,
    ),
    st.fixed_dictionaries(
        {b"t": tids, b"y": st.just(b"r"), b"r": _mostly(_bodies)}, optional=_advisory
    ),
    st.fixed_dictionaries(
        {b"t": tids, b"y": st.just(b"e"), b"e": _mostly(_error_bodies)}, optional=_advisory
    ),
)
_tops = st.integers(0, 3).flatmap(lambda pick: _structured_tops if pick else _loose_tops)


@settings(max_examples=500, deadline=None)
@given(_tops)
def test_arbitrary_bencoded_dicts_give_a_message_or_krpc_error(top: dict[bytes, Any]) -> None:
    wire = encode(top)
    try:
        message = decode_message(wire, ROOMY)
    except KRPCError:
        return
    # Whatever decoded is a valid message of its own: it encodes, and decodes to itself.
    assert decode_message(message.encode(), ROOMY) == message


# --- the envelope -----------------------------------------------------------------------------


def test_top_level_keys_are_kept() -> None:
    ip = PeerAddress.parse("[2001:db8::1]:6881")
    ping = Ping(transaction_id=b"aa", node_id=ID, version=b"LT\x01\x02", ip=ip, read_only=True)
    wire = ping.encode()
    assert b"2:ro" in wire
    assert b"1:v4:LT" in wire
    assert decode_message(wire) == ping


def test_bep42_ip_in_a_response() -> None:
    wire = encode(
        {b"t": b"aa", b"y": b"r", b"r": {b"id": ID}, b"ip": bytes([1, 2, 3, 4, 0x1A, 0xE1])}
    )
    message = decode_message(wire)
    assert message.ip == PeerAddress.parse("1.2.3.4:6881")


def test_malformed_advisory_keys_are_dropped_not_fatal() -> None:
    top: dict[bytes, Any] = {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": ID}}
    top |= {b"ip": b"xyz", b"v": 5, b"ro": b"yes", b"unknown": [1, 2]}
    wire = encode(top)
    message = decode_message(wire)
    assert isinstance(message, Ping)
    assert (message.ip, message.version, message.read_only) == (None, None, False)


def test_unsorted_keys_are_tolerated() -> None:
    wire = b"d1:y1:q1:q4:ping1:t2:aa1:ad2:id20:abcdefghij0123456789ee"
    assert decode_message(wire) == Ping(transaction_id=b"aa", node_id=ID)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"le",
        b"i1e",
        b"d1:t2:aae",  # no y
        b"d1:t2:aa1:y1:xe",  # unknown y
        b"d1:ti1e1:y1:qe",  # t is not a string
        b"d1:q4:ping1:y1:qe",  # no t
        b"d1:ad2:id20:abcdefghij0123456789e1:qi1e1:t2:aa1:y1:qe",  # q is not a string
        b"d1:rd2:id2:abe1:t2:aa1:y1:re",  # short id in a response
        b"d1:rle1:t2:aa1:y1:re",  # r is not a dict
        b"d1:eli201ee1:t2:aa1:y1:xe",
        b"d1:ele1:t2:aa1:y1:ee",  # empty e
        b"d1:el3:abce1:t2:aa1:y1:ee",  # e has no code
        b"d1:e3:abc1:t2:aa1:y1:ee",  # e is not a list
        b"d1:t2:aa1:t2:bb1:y1:re",  # duplicate key
        b"d1:t2:aa1:y1:qe trailing",
    ],
)
def test_malformed_datagrams_raise_krpc_error(wire: bytes) -> None:
    with pytest.raises(KRPCError):
        decode_message(wire)


def test_non_bytes_input_raises_krpc_error() -> None:
    with pytest.raises(KRPCError, match="bytes"):
        decode_message("d1:t2:aae")  # type: ignore[arg-type]


def test_error_variants() -> None:
    bare = decode_message(b"d1:eli202ee1:t2:aa1:y1:ee")
    assert isinstance(bare, ErrorReply)
    assert (bare.code, bare.message) == (ErrorCode.SERVER, "")
    odd = decode_message(b"d1:eli999ei5ee1:t2:aa1:y1:ee")
    assert isinstance(odd, ErrorReply)
    assert (odd.code, odd.message) == (999, "")
    assert not isinstance(odd.code, ErrorCode)
    latin = decode_message(b"d1:eli203e2:\xff\xfee1:t2:aa1:y1:ee")
    assert isinstance(latin, ErrorReply)
    assert latin.encode() == b"d1:eli203e2:\xff\xfee1:t2:aa1:y1:ee"
    assert ErrorReply(transaction_id=b"a", code=205).code is ErrorCode.MESSAGE_TOO_BIG


# --- queries ----------------------------------------------------------------------------------


def _query_wire(method: bytes, args: dict[bytes, Any]) -> bytes:
    return encode({b"t": b"tx", b"y": b"q", b"q": method, b"a": args})


@pytest.mark.parametrize(
    ("method", "args"),
    [
        (b"ping", {}),
        (b"ping", {b"id": b"short"}),
        (b"find_node", {b"id": ID}),
        (b"find_node", {b"id": ID, b"target": b"x" * 19}),
        (b"get_peers", {b"id": ID, b"info_hash": 5}),
        (b"announce_peer", {b"id": ID, b"info_hash": TARGET, b"token": b"t"}),
        (b"announce_peer", {b"id": ID, b"info_hash": TARGET, b"port": 70000, b"token": b"t"}),
        (b"announce_peer", {b"id": ID, b"info_hash": TARGET, b"port": -1, b"token": b"t"}),
        (b"announce_peer", {b"id": ID, b"info_hash": TARGET, b"port": 1}),
        (b"get", {b"id": ID, b"target": TARGET, b"seq": b"1"}),
        (b"put", {b"id": ID, b"token": b"t"}),
        (b"put", {b"id": ID, b"token": b"t", b"v": b"x", b"k": b"k" * 32}),
        (b"put", {b"id": ID, b"token": b"t", b"v": b"x", b"k": b"k" * 31}),
        (b"put", {b"id": ID, b"token": b"t", b"v": b"x", b"salt": b"s"}),
        (b"put", {b"id": ID, b"token": b"t", b"v": b"x", b"cas": 1}),
        (b"sample_infohashes", {b"id": ID}),
        (b"vote", {b"target": TARGET}),
    ],
)
def test_bad_arguments_raise_query_error_with_the_transaction(
    method: bytes, args: dict[bytes, Any]
) -> None:
    with pytest.raises(KRPCQueryError) as caught:
        decode_message(_query_wire(method, args))
    assert caught.value.transaction_id == b"tx"
    assert caught.value.method == method


def test_a_is_not_a_dict_is_a_query_error() -> None:
    wire = encode({b"t": b"tx", b"y": b"q", b"q": b"ping", b"a": [1]})
    with pytest.raises(KRPCQueryError):
        decode_message(wire)


def test_implied_port_makes_port_optional() -> None:
    wire = _query_wire(
        b"announce_peer", {b"id": ID, b"info_hash": TARGET, b"implied_port": 1, b"token": b"t"}
    )
    message = decode_message(wire)
    assert isinstance(message, AnnouncePeer)
    assert (message.port, message.implied_port) == (0, True)


def test_flags_and_want() -> None:
    args = {b"id": ID, b"info_hash": TARGET, b"noseed": 1, b"scrape": 2, b"want": [b"n6", 7]}
    message = decode_message(_query_wire(b"get_peers", args))
    assert isinstance(message, GetPeers)
    assert (message.noseed, message.scrape, message.want) == (True, True, (WANT_N6,))
    ignored_flag = decode_message(_query_wire(b"get_peers", {**args, b"noseed": b"1"}))
    assert isinstance(ignored_flag, GetPeers)
    assert ignored_flag.noseed is False


def test_unknown_method_keeps_its_arguments() -> None:
    message = decode_message(_query_wire(b"vote", {b"id": ID, b"target": TARGET, b"vote": 3}))
    assert isinstance(message, UnknownQuery)
    assert message.name == b"vote"
    assert message.extra == {b"target": TARGET, b"vote": 3}
    assert decode_message(message.encode()) == message


def test_unknown_arguments_are_kept_and_written_back() -> None:
    wire = _query_wire(b"find_node", {b"id": ID, b"target": TARGET, b"zz": [1, b"x"]})
    message = decode_message(wire)
    assert isinstance(message, FindNode)
    assert message.extra == {b"zz": [1, b"x"]}
    assert message.encode() == wire


def test_put_mutable_and_immutable() -> None:
    immutable = Put(transaction_id=b"t", node_id=ID, token=b"tok", v=b"12:Hello World!")
    assert not immutable.is_mutable
    mutable = Put(
        transaction_id=b"t",
        node_id=ID,
        token=b"tok",
        v={b"a": [1]},
        k=b"k" * 32,
        sig=b"s" * 64,
        seq=3,
        salt=b"x" * 100,  # over BEP 44's 64: the codec keeps it so storage can answer 207
    )
    assert mutable.is_mutable
    assert decode_message(mutable.encode(), ROOMY) == mutable


def test_messages_are_hashable() -> None:
    ping = Ping(transaction_id=b"t", node_id=ID, extra={b"x": [1]})
    assert hash(ping) == hash(Ping(transaction_id=b"t", node_id=ID, extra={b"x": [1]}))
    response = Response(transaction_id=b"t", node_id=ID, v={b"a": 1})
    assert isinstance(hash(response), int)


# --- responses --------------------------------------------------------------------------------


def _response_wire(body: dict[bytes, Any]) -> bytes:
    return encode({b"t": b"tx", b"y": b"r", b"r": {b"id": ID, **body}})


def test_malformed_response_keys_are_dropped_and_named() -> None:
    good_peer = bytes([1, 2, 3, 4, 0, 80])
    wire = _response_wire(
        {
            b"nodes": b"x" * 25,  # not one whole entry
            b"nodes6": 5,
            b"values": [good_peer, b"bad", 3],
            b"token": 1,
            b"samples": b"x" * 21,
            b"num": -1,
            b"interval": b"1",
            b"k": b"short",
            b"sig": b"short",
            b"seq": b"1",
            b"BFsd": b"x" * 255,
            b"BFpe": [],
        }
    )
    message = decode_message(wire)
    assert isinstance(message, Response)
    assert message.values == (PeerAddress.from_compact(good_peer),)
    assert set(message.ignored) == {
        b"nodes",
        b"nodes6",
        b"values",
        b"token",
        b"samples",
        b"num",
        b"interval",
        b"k",
        b"sig",
        b"seq",
        b"BFsd",
        b"BFpe",
    }
    assert (message.nodes, message.nodes6, message.token, message.samples) == (None,) * 4
    assert message.extra == {}


def test_values_mix_families() -> None:
    v4 = PeerAddress.parse("1.2.3.4:5")
    v6 = PeerAddress.parse("[::1]:6")
    message = decode_message(_response_wire({b"values": [v4.to_compact(), v6.to_compact()]}))
    assert isinstance(message, Response)
    assert message.values == (v4, v6)


def test_scrape_filters_round_trip() -> None:
    response = Response(
        transaction_id=b"t", node_id=ID, bfsd=b"\x01" * BLOOM_BYTES, bfpe=bytes(BLOOM_BYTES)
    )
    assert b"4:BFsd256:" in response.encode()
    assert decode_message(response.encode()) == response


def test_check_answers() -> None:
    find = FindNode(transaction_id=b"t", node_id=ID, target=TARGET)
    peers = GetPeers(transaction_id=b"t", node_id=ID, info_hash=TARGET)
    sample = SampleInfohashes(transaction_id=b"t", node_id=ID, target=TARGET)
    get = Get(transaction_id=b"t", node_id=ID, target=TARGET)
    bare = Response(transaction_id=b"t", node_id=ID)
    for query in (find, peers, sample):
        with pytest.raises(KRPCError):
            bare.check_answers(query)
    bare.check_answers(get)
    Response(transaction_id=b"t", node_id=ID, nodes6=()).check_answers(find)
    Response(transaction_id=b"t", node_id=ID, values=()).check_answers(peers)
    with pytest.raises(KRPCError, match="k, sig and seq"):
        Response(transaction_id=b"t", node_id=ID, v=b"x", k=b"k" * 32).check_answers(get)


# --- bounds -----------------------------------------------------------------------------------


def test_oversized_datagrams_are_refused_before_decoding() -> None:
    big = _response_wire({b"token": b"x" * 1500})
    assert len(big) > DEFAULT_LIMITS.max_datagram
    with pytest.raises(KRPCError, match="exceeds"):
        decode_message(big)
    assert isinstance(decode_message(big, ROOMY), Response)


def test_deep_nesting_is_refused() -> None:
    deep = b"l" * 40 + b"e" * 40
    wire = b"d1:ad2:id20:" + ID + b"5:token1:t1:v" + deep + b"e1:q3:put1:t2:aa1:y1:qe"
    with pytest.raises(KRPCError):
        decode_message(wire)


def test_list_caps() -> None:
    limits = KRPCLimits(max_values=2, max_nodes=1, max_samples=1, max_want=1)
    node = NodeInfo(ID, PeerAddress.parse("1.2.3.4:5")).to_compact()
    wire = _response_wire(
        {b"values": [bytes(6)] * 3, b"nodes": node * 2, b"samples": ID * 2, b"token": b"t"}
    )
    message = decode_message(wire, limits)
    assert isinstance(message, Response)
    assert set(message.ignored) == {b"values", b"nodes", b"samples"}
    assert (message.values, message.nodes, message.samples) == (None, None, None)
    want_wire = _query_wire(b"find_node", {b"id": ID, b"target": TARGET, b"want": [b"n6", b"n4"]})
    want_message = decode_message(want_wire, limits)  # read up to the cap, not refused
    assert isinstance(want_message, FindNode)
    assert want_message.want == (b"n6",)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_limits_are_validated(bad: Any) -> None:
    with pytest.raises(LocalProtocolError):
        KRPCLimits(max_datagram=bad)


# --- constructors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Ping(transaction_id=b"t", node_id=b"short"),
        lambda: Ping(transaction_id="t", node_id=ID),  # type: ignore[arg-type]
        lambda: Ping(transaction_id=b"t", node_id=ID, read_only=1),  # type: ignore[arg-type]
        lambda: Ping(transaction_id=b"t", node_id=ID, ip="1.2.3.4:5"),  # type: ignore[arg-type]
        lambda: Ping(transaction_id=b"t", node_id=ID, extra={b"id": ID}),
        lambda: Ping(transaction_id=b"t", node_id=ID, extra={"x": 1}),  # type: ignore[dict-item]
        lambda: Ping(transaction_id=b"t", node_id=ID, extra={b"x": 1.5}),  # type: ignore[dict-item]
        lambda: FindNode(transaction_id=b"t", node_id=ID, target=TARGET, want=["n4"]),  # type: ignore[arg-type]
        lambda: AnnouncePeer(
            transaction_id=b"t", node_id=ID, info_hash=TARGET, port=65536, token=b""
        ),
        lambda: Get(transaction_id=b"t", node_id=ID, target=TARGET, seq=True),
        lambda: Put(transaction_id=b"t", node_id=ID, token=b"", v=b"", k=b"k" * 32),
        lambda: Put(transaction_id=b"t", node_id=ID, token=b"", v=b"", salt=b"s"),
        lambda: Put(transaction_id=b"t", node_id=ID, token=b"", v=None),  # type: ignore[arg-type]
        lambda: UnknownQuery(transaction_id=b"t", node_id=ID, name=b"ping"),
        lambda: Response(
            transaction_id=b"t", node_id=ID, nodes=(NodeInfo(ID, PeerAddress.parse("[::1]:1")),)
        ),
        lambda: Response(
            transaction_id=b"t", node_id=ID, nodes6=(NodeInfo(ID, PeerAddress.parse("1.1.1.1:1")),)
        ),
        lambda: Response(transaction_id=b"t", node_id=ID, values=[PeerAddress.parse("1.1.1.1:1")]),  # type: ignore[arg-type]
        lambda: Response(transaction_id=b"t", node_id=ID, samples=(b"x",)),
        lambda: Response(transaction_id=b"t", node_id=ID, bfsd=b"x"),
        lambda: Response(transaction_id=b"t", node_id=ID, num=-1),
        lambda: ErrorReply(transaction_id=b"t", code="201"),  # type: ignore[arg-type]
        lambda: ErrorReply(transaction_id=b"t", code=201, message=b"x"),  # type: ignore[arg-type]
        lambda: ErrorReply(transaction_id=b"t", code=201, message="\ud800"),
    ],
)
def test_constructors_reject_misuse(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()


def test_buffer_inputs() -> None:
    wire = Ping(transaction_id=b"t", node_id=ID).encode()
    assert decode_message(bytearray(wire)) == decode_message(memoryview(wire))
    # A memoryview's length counts items, not bytes: the size cap must count bytes.
    wide = memoryview(wire + b"\0" * (-len(wire) % 4) + bytes(1500)).cast("I")
    with pytest.raises(KRPCError, match="exceeds"):
        decode_message(wide)


_any_message = st.one_of(list(ALL.values()))


@settings(max_examples=300, deadline=None)
@given(_any_message, st.data())
def test_damaged_messages_give_a_message_or_krpc_error(
    message: Message, data: st.DataObject
) -> None:
    wire = bytearray(message.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(wire) - 1, 0)))
        if action == "flip" and wire:
            wire[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del wire[at : at + data.draw(st.integers(1, 30))]
        else:
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=30))
    with contextlib.suppress(KRPCError):
        decoded = decode_message(bytes(wire), ROOMY)
        assert decode_message(decoded.encode(), ROOMY) == decoded


@pytest.mark.parametrize(
    ("want", "default", "expected"),
    [
        (None, 4, {4}),
        (None, 6, {6}),
        ((), 6, {6}),
        ((WANT_N4,), 6, {4}),
        ((WANT_N6,), 4, {6}),
        ((WANT_N6, WANT_N4, b"n5"), 4, {4, 6}),
        ((b"n5", b""), 6, {6}),
    ],
)
def test_wanted_families(want: tuple[bytes, ...] | None, default: Any, expected: set[int]) -> None:
    assert wanted_families(want, default) == expected
