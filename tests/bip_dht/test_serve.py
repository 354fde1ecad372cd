"""QueryHandler: every query type answered per the BEPs, tokens, read-only, rate limits, fuzzing."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import decode, encode
from bip_dht._bloom import ScrapeBloom
from bip_dht._errors import LocalProtocolError
from bip_dht._items import ImmutableItem, ItemStore, MutableItem
from bip_dht._krpc import (
    WANT_N4,
    WANT_N6,
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
from bip_dht._node_config import DHTConfig
from bip_dht._node_id import NodeId
from bip_dht._peer_store import PeerStore
from bip_dht._ratelimit import RateLimiter
from bip_dht._routing import RoutingTable
from bip_dht._serve import MAX_SAMPLE_COUNT, QueryHandler
from bip_dht._tokens import TokenManager
from bip_handshake import NodeInfo, PeerAddress

OWN = NodeId(b"\x80" + bytes(19))
SOURCE = PeerAddress.parse("10.1.2.3:5000")
SOURCE6 = PeerAddress.parse("[fd00::5]:5000")
THEM = b"t" * 20
HASH = b"h" * 20


def make(**kwargs: object) -> tuple[QueryHandler, RoutingTable, RoutingTable, PeerStore, ItemStore]:
    rng = random.Random(7)
    table = RoutingTable(OWN, family=4, rng=rng)
    table6 = RoutingTable(OWN, family=6, rng=rng)
    for i in range(20):
        table.heard_from(
            NodeInfo(bytes([i]) * 20, PeerAddress.parse(f"10.9.0.{i + 1}:6881")), 0.0, True
        )
        table6.heard_from(
            NodeInfo(bytes([i]) * 20, PeerAddress.parse(f"[fd00::9:{i + 1}]:6881")), 0.0, True
        )
    peers, items = PeerStore(), ItemStore()
    options: dict[str, object] = {"table6": table6, "rng": rng, "rate_limit": None}
    options.update(kwargs)
    handler = QueryHandler(
        OWN,
        table,
        TokenManager(random.Random(1), now=0.0),
        peers,
        items,
        **options,  # type: ignore[arg-type]
    )
    return handler, table, table6, peers, items


def ask(
    handler: QueryHandler, data: bytes, source: PeerAddress = SOURCE, now: float = 1.0
) -> Response:
    reply = handler.handle(data, source, now)
    assert reply is not None
    message = decode_message(reply)
    assert isinstance(message, Response), message
    assert message.node_id == OWN.value
    assert message.ip == source  # BEP 42
    assert message.transaction_id == b"tx"
    return message


def ask_error(
    handler: QueryHandler, data: bytes, source: PeerAddress = SOURCE, now: float = 1.0
) -> ErrorReply:
    reply = handler.handle(data, source, now)
    assert reply is not None
    message = decode_message(reply)
    assert isinstance(message, ErrorReply), message
    assert message.ip == source
    return message


def test_ping() -> None:
    handler, *_ = make()
    response = ask(handler, Ping(transaction_id=b"tx", node_id=THEM).encode())
    assert response.nodes is None
    assert response.values is None
    assert handler.statistics().queries == {b"ping": 1}


def test_find_node_closest_per_want() -> None:
    handler, table, table6, *_ = make()
    target = bytes([3]) * 20
    response = ask(handler, FindNode(transaction_id=b"tx", node_id=THEM, target=target).encode())
    assert response.nodes is not None
    assert len(response.nodes) == 8
    assert response.nodes6 is None
    assert list(response.nodes) == table.closest(NodeId(target), 1.0)
    both = FindNode(transaction_id=b"tx", node_id=THEM, target=target, want=(WANT_N4, WANT_N6))
    response = ask(handler, both.encode())
    assert response.nodes is not None
    assert response.nodes6 is not None
    assert list(response.nodes6) == table6.closest(NodeId(target), 1.0)
    only6 = FindNode(transaction_id=b"tx", node_id=THEM, target=target, want=(WANT_N6,))
    response = ask(handler, only6.encode())
    assert response.nodes is None
    assert response.nodes6 is not None
    # Over IPv6 without want: IPv6 nodes.
    response = ask(
        handler, FindNode(transaction_id=b"tx", node_id=THEM, target=target).encode(), SOURCE6
    )
    assert response.nodes6 is not None
    assert response.nodes is None


def test_get_peers_values_token_and_announce_roundtrip() -> None:
    handler, _, _, _peers, _ = make()
    query = GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH)
    response = ask(handler, query.encode())
    assert response.values is None
    assert response.nodes
    assert response.token
    announce = AnnouncePeer(
        transaction_id=b"tx", node_id=THEM, info_hash=HASH, port=6881, token=response.token
    )
    ask(handler, announce.encode(), now=2.0)
    response = ask(handler, query.encode(), now=3.0)
    assert response.values == (PeerAddress(SOURCE.host, 6881),)
    assert response.nodes is None
    assert response.token


def test_announce_implied_port_and_seed_noseed_scrape() -> None:
    handler, _, _, peers, _ = make()
    token = ask(
        handler, GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH).encode()
    ).token
    assert token is not None
    announce = AnnouncePeer(
        transaction_id=b"tx",
        node_id=THEM,
        info_hash=HASH,
        port=1,
        token=token,
        implied_port=True,
        seed=True,
    )
    ask(handler, announce.encode())
    assert peers.get_peers(HASH, 4, random.Random(0), 1.0) == [SOURCE]
    noseed = GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH, noseed=True)
    assert ask(handler, noseed.encode()).values is None
    scrape = GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH, scrape=True)
    response = ask(handler, scrape.encode())
    assert response.bfsd is not None
    assert response.bfpe is not None
    assert SOURCE.host in ScrapeBloom.from_bytes(response.bfsd)
    assert response.bfpe == bytes(256)


def test_tokens_across_rotation_and_bad_tokens() -> None:
    handler, _, _, _peers, _ = make()
    token = ask(
        handler, GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH).encode()
    ).token
    assert token is not None

    def announce(
        tok: bytes, source: PeerAddress, now: float, info_hash: bytes = HASH
    ) -> bytes | None:
        query = AnnouncePeer(
            transaction_id=b"tx", node_id=THEM, info_hash=info_hash, port=6881, token=tok
        )
        return handler.handle(query.encode(), source, now)

    ok = announce(token, SOURCE, 400.0)  # one rotation later: still accepted
    assert ok is not None
    assert isinstance(decode_message(ok), Response)
    for bad in (
        announce(token, SOURCE, 700.0),  # two rotations: expired
        announce(token, PeerAddress.parse("10.1.2.4:5000"), 1.0),  # another IP
        announce(token, SOURCE, 1.0, b"x" * 20),  # another info-hash
        announce(b"garbage", SOURCE, 1.0),
    ):
        assert bad is not None
        error = decode_message(bad)
        assert isinstance(error, ErrorReply)
        assert error.code == ErrorCode.PROTOCOL
    assert handler.statistics().errors_sent == {203: 4}


def test_announce_port_zero_refused() -> None:
    handler, *_ = make()
    token = ask(
        handler, GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH).encode()
    ).token
    assert token is not None
    query = AnnouncePeer(transaction_id=b"tx", node_id=THEM, info_hash=HASH, port=0, token=token)
    assert ask_error(handler, query.encode()).code == ErrorCode.PROTOCOL


def put_token(handler: QueryHandler, target: bytes) -> bytes:
    token = ask(handler, Get(transaction_id=b"tx", node_id=THEM, target=target).encode()).token
    assert token is not None
    return token


def test_immutable_put_and_get() -> None:
    handler, *_ = make()
    item = ImmutableItem(b"12:Hello World!")
    response = ask(handler, Get(transaction_id=b"tx", node_id=THEM, target=item.target).encode())
    assert response.v is None
    assert response.nodes
    assert response.token
    put = Put(
        transaction_id=b"tx", node_id=THEM, token=put_token(handler, item.target), v=b"Hello World!"
    )
    ask(handler, put.encode())
    response = ask(handler, Get(transaction_id=b"tx", node_id=THEM, target=item.target).encode())
    assert response.v == b"Hello World!"
    assert response.k is None
    bad = Put(transaction_id=b"tx", node_id=THEM, token=b"nope", v=b"Hello World!")
    assert ask_error(handler, bad.encode()).code == ErrorCode.PROTOCOL
    big = Put(transaction_id=b"tx", node_id=THEM, token=b"nope", v=b"x" * 1000)
    assert ask_error(handler, big.encode()).code == ErrorCode.MESSAGE_TOO_BIG


def test_mutable_put_get_seq_cas_salt_signature() -> None:
    handler, *_ = make()
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    first = MutableItem.create(key, encode(b"one"), 1, b"salt")
    token = put_token(handler, first.target)

    def put(item: MutableItem, cas: int | None = None, sig: bytes | None = None) -> bytes:
        return Put(
            transaction_id=b"tx",
            node_id=THEM,
            token=token,
            v=decode(item.value),
            k=item.public_key,
            sig=sig or item.signature,
            seq=item.seq,
            salt=item.salt,
            cas=cas,
        ).encode()

    ask(handler, put(first))
    get = Get(transaction_id=b"tx", node_id=THEM, target=first.target)
    response = ask(handler, get.encode())
    assert (response.v, response.k, response.sig, response.seq) == (
        b"one",
        first.public_key,
        first.signature,
        1,
    )
    # The requester already has seq 1: only seq comes back.
    response = ask(
        handler, Get(transaction_id=b"tx", node_id=THEM, target=first.target, seq=1).encode()
    )
    assert response.seq == 1
    assert response.v is None
    second = MutableItem.create(key, encode(b"two"), 2, b"salt")
    assert ask_error(handler, put(second, sig=bytes(64))).code == ErrorCode.INVALID_SIGNATURE
    assert ask_error(handler, put(second, cas=5)).code == ErrorCode.CAS_MISMATCH
    ask(handler, put(second, cas=1))
    assert ask_error(handler, put(first)).code == ErrorCode.SEQUENCE_TOO_LOW
    salted = Put(
        transaction_id=b"tx",
        node_id=THEM,
        token=token,
        v=b"x",
        k=first.public_key,
        sig=bytes(64),
        seq=3,
        salt=b"s" * 65,
    )
    assert ask_error(handler, salted.encode()).code == ErrorCode.SALT_TOO_BIG
    # A token for one target does not put another.
    other = MutableItem.create(key, encode(b"one"), 1, b"other")
    assert ask_error(handler, put(other)).code == ErrorCode.PROTOCOL


def test_sample_infohashes() -> None:
    handler, _, _, peers, _ = make()
    hashes = {bytes([i]) * 20 for i in range(30)}
    for h in hashes:
        peers.announce(h, PeerAddress.parse("10.0.0.1:1"), seed=False, now=0.0)
    response = ask(
        handler, SampleInfohashes(transaction_id=b"tx", node_id=THEM, target=HASH).encode()
    )
    assert response.samples is not None
    assert len(response.samples) == 20
    assert set(response.samples) <= hashes
    assert len(set(response.samples)) == 20
    assert response.num == 30
    assert response.interval == 21600
    assert response.nodes


def test_malformed_unknown_and_not_queries() -> None:
    handler, *_ = make()
    # A known method with a bad argument: 203 with the transaction id.
    bad = encode({b"t": b"tx", b"y": b"q", b"q": b"find_node", b"a": {b"id": THEM}})
    assert ask_error(handler, bad).code == ErrorCode.PROTOCOL
    unknown = encode({b"t": b"tx", b"y": b"q", b"q": b"frobnicate", b"a": {b"id": THEM}})
    assert ask_error(handler, unknown).code == ErrorCode.METHOD_UNKNOWN
    # Unknown method with a target: find_node semantics (BEP 51).
    targeted = encode(
        {b"t": b"tx", b"y": b"q", b"q": b"frobnicate", b"a": {b"id": THEM, b"target": HASH}}
    )
    assert ask(handler, targeted).nodes
    assert handler.handle(b"not bencode", SOURCE, 1.0) is None
    response = Response(transaction_id=b"tx", node_id=THEM).encode()
    assert handler.handle(response, SOURCE, 1.0) is None
    error = ErrorReply(transaction_id=b"tx", code=201, message="x").encode()
    assert handler.handle(error, SOURCE, 1.0) is None
    stats = handler.statistics()
    assert stats.dropped_malformed == 1
    assert stats.not_queries == 2
    assert stats.errors_sent == {203: 1, 204: 1}
    assert stats.queries == {b"find_node": 1, b"frobnicate": 2}


def test_read_only_answers_nothing() -> None:
    handler, *_ = make(read_only=True)
    assert handler.handle(Ping(transaction_id=b"tx", node_id=THEM).encode(), SOURCE, 1.0) is None
    assert handler.statistics().read_only_ignored == 1


def test_querier_offered_to_table_unless_read_only() -> None:
    handler, table, *_ = make()
    querier = b"\x81" + bytes(19)
    ro = Ping(transaction_id=b"tx", node_id=querier, read_only=True)
    ask(handler, ro.encode())
    assert table.candidate_count == 0
    ask(handler, Ping(transaction_id=b"tx", node_id=querier).encode())
    # a candidate to query (libtorrent's unpinged node): in no bucket until it answers us
    assert table.candidate_count == 1
    assert table.state_of(querier, 1.0) is None


def test_replies_hand_out_only_nodes_that_answered_us() -> None:
    handler, table, *_ = make()
    for i in range(3, 20):  # three nodes that answered us are left: fewer than a reply holds
        table.remove(bytes([i]) * 20, 0.0)
    assert len(table) == 3
    near = b"\x80" + bytes(18) + b"\x03"
    querier = NodeInfo(near[:19] + b"\x01", PeerAddress.parse("10.7.7.7:6881"))
    ask(handler, Ping(transaction_id=b"tx", node_id=querier.node_id).encode(), querier.address)
    assert table.candidate_count == 1  # kept apart from the buckets, to be queried
    queries = [
        FindNode(transaction_id=b"tx", node_id=THEM, target=near),
        GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=near),
        Get(transaction_id=b"tx", node_id=THEM, target=near),
        SampleInfohashes(transaction_id=b"tx", node_id=THEM, target=near),
    ]
    for query in queries:
        nodes = ask(handler, query.encode()).nodes
        assert nodes is not None
        assert querier not in nodes, query  # not even to fill the reply up
        assert len(nodes) == 3
    # its answer to one of our queries confirms it: now it is passed on, nearest first
    table.heard_from(querier, 2.0, responded=True)
    for query in queries:
        nodes = ask(handler, query.encode(), now=2.0).nodes
        assert nodes is not None
        assert nodes[0] == querier, query
        assert len(nodes) == 4


def test_rate_limit_on_explicit_clock() -> None:
    handler, *_ = make(rate_limit=RateLimiter(rate=1.0, burst=3.0))
    ping = Ping(transaction_id=b"tx", node_id=THEM).encode()
    answers = [handler.handle(ping, SOURCE, 0.0) for _ in range(5)]
    assert [a is not None for a in answers] == [True, True, True, False, False]
    # Another IP has its own bucket; time refills.
    assert handler.handle(ping, PeerAddress.parse("10.1.2.4:1"), 0.0) is not None
    assert handler.handle(ping, SOURCE, 1.0) is not None
    assert handler.handle(ping, SOURCE, 1.0) is None
    assert handler.statistics().rate_limited == 3


def test_constructor_checks() -> None:
    rng = random.Random(0)
    table = RoutingTable(OWN, family=4, rng=rng)
    tokens = TokenManager(rng, now=0.0)
    with pytest.raises(LocalProtocolError):
        QueryHandler(bytes(20), table, tokens, PeerStore(), ItemStore(), rng=rng)
    with pytest.raises(LocalProtocolError):
        QueryHandler(OWN, table, tokens, PeerStore(), ItemStore(), table6=table, rng=rng)
    handler = QueryHandler(OWN, table, tokens, PeerStore(), ItemStore(), rng=rng)
    with pytest.raises(LocalProtocolError):
        handler.handle(b"", "1.2.3.4:5", 0.0)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            encode,
            st.recursive(
                st.one_of(st.integers(), st.binary(max_size=30)),
                lambda inner: st.one_of(
                    st.lists(inner, max_size=4),
                    st.dictionaries(
                        st.sampled_from(
                            [
                                b"t",
                                b"y",
                                b"q",
                                b"a",
                                b"r",
                                b"e",
                                b"id",
                                b"target",
                                b"info_hash",
                                b"token",
                                b"port",
                                b"v",
                                b"k",
                                b"sig",
                                b"seq",
                                b"want",
                                b"ro",
                                b"salt",
                            ]
                        ),
                        inner,
                        max_size=6,
                    ),
                ),
                max_leaves=12,
            ),
        ),
    )
)
def test_arbitrary_datagrams_never_raise(data: bytes) -> None:
    handler, *_ = make()
    reply = handler.handle(data, SOURCE, 1.0)
    if reply is not None:
        assert isinstance(decode_message(reply), Response | ErrorReply)


def test_ratelimiter_bounded_and_checked() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0, max_hosts=3)
    for i in range(10):
        assert limiter.allow(IPv4Address(f"10.0.0.{i}"), 0.0)
    assert len(limiter) == 3
    mapped = PeerAddress.parse("[::ffff:10.0.0.9]:1").host
    assert not limiter.allow(mapped, 0.0)  # the same host as 10.0.0.9
    with pytest.raises(LocalProtocolError):
        RateLimiter(rate=0)
    with pytest.raises(LocalProtocolError):
        RateLimiter(max_hosts=0)


def test_scrape_replaces_values_and_replies_fit_a_datagram() -> None:
    handler, _, _, peers, _ = make()
    for i in range(300):
        peers.announce(
            HASH, PeerAddress.parse(f"10.2.{i // 200}.{i % 200 + 1}:1"), seed=i % 2 == 0, now=0.0
        )
        peers.announce(HASH, PeerAddress.parse(f"[fd00::2:{i + 1}]:1"), seed=False, now=0.0)
    both = (WANT_N4, WANT_N6)
    for source in (SOURCE, SOURCE6):
        for scrape in (False, True):
            query = GetPeers(
                transaction_id=b"tx", node_id=THEM, info_hash=HASH, want=both, scrape=scrape
            )
            reply = handler.handle(query.encode(), source, 1.0)
            assert reply is not None
            assert len(reply) <= 1280
            response = decode_message(reply)
            assert isinstance(response, Response)
            assert (response.values is None) == scrape
            assert (response.bfsd is not None) == scrape
    scraping = GetPeers(transaction_id=b"tx", node_id=THEM, info_hash=HASH, scrape=True)
    response = ask(handler, scraping.encode())
    assert response.bfsd is not None
    assert response.bfpe is not None
    assert 100 < ScrapeBloom.from_bytes(response.bfsd).estimate() < 200


_ARG_VALUES = st.one_of(
    st.binary(min_size=0, max_size=70),
    st.sampled_from([THEM, HASH, bytes(20), bytes(32), bytes(64)]),
    st.integers(min_value=-2, max_value=2**64),
    st.lists(st.sampled_from([b"n4", b"n6", b"x"]), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(
        [
            b"ping",
            b"find_node",
            b"get_peers",
            b"announce_peer",
            b"get",
            b"put",
            b"sample_infohashes",
            b"vote",
            b"",
        ]
    ),
    args=st.dictionaries(
        st.sampled_from(
            [
                b"target",
                b"info_hash",
                b"token",
                b"port",
                b"implied_port",
                b"seed",
                b"noseed",
                b"scrape",
                b"v",
                b"k",
                b"sig",
                b"seq",
                b"cas",
                b"salt",
                b"want",
            ]
        ),
        _ARG_VALUES,
        max_size=8,
    ),
    read_only=st.booleans(),
    source=st.sampled_from([SOURCE, SOURCE6, PeerAddress.parse("[::ffff:10.1.2.3]:1")]),
)
def test_arbitrary_queries_get_a_reply_and_never_raise(
    method: bytes, args: dict[bytes, object], read_only: bool, source: PeerAddress
) -> None:
    handler, *_ = make()
    arguments: dict[bytes, Any] = {b"id": THEM, **args}
    top: dict[bytes, Any] = {b"t": b"tx", b"y": b"q", b"q": method, b"a": arguments}
    top[b"ro"] = int(read_only)
    datagram = encode(top)
    reply = handler.handle(datagram, source, 1.0)
    assert reply is not None  # every query with a transaction id is answered
    message = decode_message(reply)
    assert isinstance(message, Response | ErrorReply)
    assert message.transaction_id == b"tx"
    assert message.ip == source


def _sample(handler: QueryHandler, now: float) -> tuple[bytes, ...]:
    query = SampleInfohashes(transaction_id=b"tx", node_id=THEM, target=HASH).encode()
    samples = ask(handler, query, now=now).samples
    assert samples is not None
    return samples


def test_sample_kept_for_its_interval() -> None:
    # BEP 51 / libtorrent's refresh_infohashes_sample: the sample we send stays the same
    # until the interval we tell the asker has passed, so asking again sooner learns nothing.
    handler, _, _, peers, _ = make(sample_interval=100)
    hashes = {i.to_bytes(20, "big") for i in range(200)}
    for h in hashes:
        peers.announce(h, PeerAddress.parse("10.0.0.1:1"), seed=False, now=0.0)
    first = _sample(handler, 1.0)
    assert len(first) == 20
    assert all(_sample(handler, 1.0 + n) == first for n in range(1, 100))
    later = _sample(handler, 101.0)  # the interval has passed: a new draw
    assert later != first
    assert set(later) <= hashes
    assert _sample(handler, 200.0) == later


def test_short_sample_redrawn_as_the_store_grows() -> None:
    handler, _, _, peers, _ = make()  # 21600 s interval
    assert _sample(handler, 1.0) == ()
    peers.announce(HASH, PeerAddress.parse("10.0.0.1:1"), seed=False, now=2.0)
    assert _sample(handler, 3.0) == (HASH,)  # fewer than the cap: not kept
    for i in range(30):
        peers.announce(bytes([i]) * 20, PeerAddress.parse("10.0.0.1:1"), seed=False, now=4.0)
    full = _sample(handler, 5.0)
    assert len(full) == 20
    assert _sample(handler, 6.0) == full
    # An interval of 0 draws anew for every query.
    handler0, _, _, peers0, _ = make(sample_interval=0, rng=random.Random(3))
    for i in range(200):
        peers0.announce(i.to_bytes(20, "big"), SOURCE, seed=False, now=0.0)
    assert len({_sample(handler0, 1.0) for _ in range(5)}) > 1


def test_sample_interval_capped_at_bep51_maximum() -> None:
    rng = random.Random(0)
    table = RoutingTable(OWN, family=4, rng=rng)
    tokens = TokenManager(rng, now=0.0)
    for bad in (21601, -1, 10**9, True, 1.5):
        with pytest.raises(LocalProtocolError):
            QueryHandler(
                OWN,
                table,
                tokens,
                PeerStore(),
                ItemStore(),
                rng=rng,
                sample_interval=bad,  # type: ignore[arg-type]
            )
        with pytest.raises(LocalProtocolError):
            DHTConfig(sample_interval=bad)  # type: ignore[arg-type]
    assert DHTConfig(sample_interval=21600).sample_interval == 21600


def test_sample_count_capped_at_libtorrent_maximum() -> None:
    # libtorrent clamps dht_max_infohashes_sample_count to 20; 256 hashes (5 KiB) would make
    # every reply too big to send, so a node configured so never answered a crawler.
    rng = random.Random(0)
    table = RoutingTable(OWN, family=4, rng=rng)
    tokens = TokenManager(rng, now=0.0)
    for bad in (21, 256, -1, True, 2.0):
        with pytest.raises(LocalProtocolError):
            QueryHandler(
                OWN,
                table,
                tokens,
                PeerStore(),
                ItemStore(),
                rng=rng,
                sample_count=bad,  # type: ignore[arg-type]
            )
        with pytest.raises(LocalProtocolError):
            DHTConfig(sample_count=bad)  # type: ignore[arg-type]
    assert DHTConfig(sample_count=MAX_SAMPLE_COUNT).sample_count == 20
    # The largest sample fits beside both full node lists, under IPv6's minimum MTU.
    handler, _, _, peers, _ = make(sample_count=MAX_SAMPLE_COUNT)
    for i in range(200):
        peers.announce(i.to_bytes(20, "big"), SOURCE, seed=False, now=0.0)
    query = SampleInfohashes(
        transaction_id=b"tx", node_id=THEM, target=HASH, want=(WANT_N4, WANT_N6)
    ).encode()
    reply = handler.handle(query, SOURCE6, 1.0)
    assert reply is not None
    assert len(reply) <= 1280
    response = decode_message(reply)
    assert isinstance(response, Response)
    assert response.samples is not None
    assert response.nodes is not None
    assert response.nodes6 is not None
    assert (len(response.samples), len(response.nodes), len(response.nodes6)) == (20, 8, 8)


def test_sample_settings_checked_when_assigned_on_a_live_handler() -> None:
    handler, _, _, peers, _ = make(sample_interval=100)
    for bad in (21601, -1, True, 1.5, None):
        with pytest.raises(LocalProtocolError):
            handler.sample_interval = bad  # type: ignore[assignment]
    for bad in (21, -1, True, None):
        with pytest.raises(LocalProtocolError):
            handler.sample_count = bad  # type: ignore[assignment]
    assert (handler.sample_count, handler.sample_interval) == (20, 100)
    for i in range(200):
        peers.announce(i.to_bytes(20, "big"), SOURCE, seed=False, now=0.0)
    handler.sample_count = 5
    handler.sample_interval = 0
    first = _sample(handler, 1.0)
    assert len(first) == 5
    assert len({_sample(handler, 1.0) for _ in range(5)} | {first}) > 1  # drawn every time
    handler.sample_interval = 21600
    kept = _sample(handler, 2.0)
    assert _sample(handler, 3.0) == kept
    query = SampleInfohashes(transaction_id=b"tx", node_id=THEM, target=HASH).encode()
    assert ask(handler, query, now=4.0).interval == 21600


def test_kept_sample_leaves_out_expired_hashes_without_redrawing() -> None:
    handler, _, _, peers, _ = make(rng=random.Random(5))  # 21600 s interval, 1800 s peer ttl
    for i in range(200):
        peers.announce(i.to_bytes(20, "big"), SOURCE, seed=False, now=0.0)
    kept = _sample(handler, 1.0)
    assert len(kept) == 20
    # Half the sample is announced again; the rest of it expires at 1800 s. Many new hashes
    # arrive too: a redraw would pick some of them.
    renewed = kept[::2]
    for h in renewed:
        peers.announce(h, SOURCE, seed=False, now=1000.0)
    for i in range(1000, 1300):
        peers.announce(i.to_bytes(20, "big"), SOURCE, seed=False, now=1000.0)
    assert _sample(handler, 2000.0) == renewed  # the kept sample, less the expired hashes
    # Re-announced within the interval, a hash is listed again (it never left the sample).
    peers.announce(kept[1], SOURCE, seed=False, now=2100.0)
    assert _sample(handler, 2200.0) == tuple(h for h in kept if h in (*renewed, kept[1]))
    # Once the interval has passed, a full sample is drawn from the hashes alive then.
    fresh = {i.to_bytes(20, "big") for i in range(5000, 5100)}
    for h in fresh:
        peers.announce(h, SOURCE, seed=False, now=21000.0)
    later = _sample(handler, 21602.0)
    assert len(later) == 20
    assert set(later) <= fresh


def test_kept_sample_redrawn_once_fewer_than_half_of_it_is_live() -> None:
    # A store that turns over every 30 min (peer ttl) emptied a 6-hour sample long before the
    # interval ended: the reply said num=300 with no samples at all.
    handler, _, _, peers, _ = make(rng=random.Random(5))  # 21600 s interval, 1800 s peer ttl
    for i in range(200):
        peers.announce(i.to_bytes(20, "big"), SOURCE, seed=False, now=0.0)
    kept = _sample(handler, 1.0)
    assert len(kept) == 20
    fresh = {i.to_bytes(20, "big") for i in range(1000, 1300)}
    for h in fresh:
        peers.announce(h, SOURCE, seed=False, now=1000.0)
    for h in kept[:9]:  # 9 of 20 live past 1800 s: fewer than half
        peers.announce(h, SOURCE, seed=False, now=1000.0)
    query = SampleInfohashes(transaction_id=b"tx", node_id=THEM, target=HASH).encode()
    response = ask(handler, query, now=1900.0)
    assert response.samples is not None
    assert len(response.samples) == 20  # a new draw among the hashes alive now
    assert set(response.samples) <= fresh | set(kept[:9])
    assert response.num == 309
    assert _sample(handler, 1901.0) == response.samples  # kept again from there


def test_decayed_sample_redrawn_at_most_once_per_24th_of_the_interval() -> None:
    # Hashes may vanish as fast as they expire (announces made a peer_ttl ago), so an early
    # redraw waits sample_interval / 24 after the last draw: a crawler asking every second
    # while the store turns over entirely learns at most 25 samples per interval.
    rng = random.Random(9)
    peers = PeerStore(max_hashes=40, peer_ttl=1.0)
    handler = QueryHandler(
        OWN,
        RoutingTable(OWN, family=4, rng=rng),
        TokenManager(rng, now=0.0),
        peers,
        ItemStore(),
        rng=rng,
        rate_limit=None,
        sample_interval=2400,  # early redraws 100 s apart at least
    )
    draws: list[tuple[bytes, ...]] = []
    serial = 0
    for second in range(2400):
        peers.expire(float(second))  # as the node's maintenance does
        for _ in range(40):  # the whole store replaced every second
            serial += 1
            peers.announce(serial.to_bytes(20, "big"), SOURCE, seed=False, now=float(second))
        samples = _sample(handler, second + 0.5)
        if not draws or not set(samples) <= set(draws[-1]):
            draws.append(samples)
    assert len(draws) == 24  # at 0.5 s, then every 100 s: the 25th would be the regular one
    assert all(len(d) == 20 for d in draws)
