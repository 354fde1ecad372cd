"""The sans-IO tracker server core, byte by byte, with the client's codec as the judge."""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_utracker._codec import (
    PROTOCOL_ID,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_request,
    decode_response,
)
from bip_utracker._errors import LocalProtocolError, MalformedPacketError
from bip_utracker._server_core import (
    BAD_CONNECTION_ID,
    DENIED,
    INTERNAL_ERROR,
    MIN_RESPONSE_SIZE,
    NOT_REGISTERED,
    Address,
    Refusal,
    ServerConfig,
    ServerStatistics,
    TrackerServerCore,
)
from bip_utracker._swarm import AnnounceAnswer, SwarmStore

SECRET = b"s" * 32
HASH = b"\x11" * 20
OTHER = b"\x22" * 20
A: Address = ("10.0.0.1", 50001)
B: Address = ("10.0.0.2", 50002)
V6: Address = ("2001:db8::1", 50003, 0, 0)
V6B: Address = ("2001:db8::2", 50004, 0, 0)
NO_LIMIT = ServerConfig(rate_limit=None)


def make(config: ServerConfig = NO_LIMIT, **kwargs: object) -> TrackerServerCore:
    return TrackerServerCore(config, secret=SECRET, rng=random.Random(3), **kwargs)  # type: ignore[arg-type]


def exchange(core: TrackerServerCore, data: bytes, addr: Address, now: float = 0.0) -> list[bytes]:
    core.receive_datagram(data, addr, now)
    sent = core.datagrams_to_send(now)
    assert all(destination is addr for _, destination in sent)
    return [packet for packet, _ in sent]


def reply(
    core: TrackerServerCore, data: bytes, addr: Address, now: float = 0.0
) -> ConnectResponse | AnnounceResponse | ScrapeResponse | ErrorResponse:
    (packet,) = exchange(core, data, addr, now)
    ipv6 = ":" in addr[0] and not addr[0].startswith("::ffff:")
    # IPv6's header is 20 bytes longer than IPv4's: its replies 20 bytes shorter.
    assert len(packet) <= core.config.max_response_size - (20 if ipv6 else 0)
    return decode_response(packet, family=6 if ipv6 else 4)


def connect(core: TrackerServerCore, addr: Address, now: float = 0.0) -> int:
    response = reply(core, ConnectRequest(0xC0FFEE).encode(), addr, now)
    assert response == ConnectResponse(0xC0FFEE, response.connection_id)  # type: ignore[union-attr]
    assert isinstance(response, ConnectResponse)
    return response.connection_id


def announce_packet(
    cid: int,
    *,
    info_hash: bytes = HASH,
    port: int = 6881,
    left: int = 100,
    event: AnnounceEvent = AnnounceEvent.STARTED,
    num_want: int = -1,
    url_data: bytes = b"",
    transaction_id: int = 77,
) -> bytes:
    return AnnounceRequest(
        cid,
        transaction_id,
        info_hash,
        b"-XX0001-" + bytes(12),
        0,
        left,
        0,
        event,
        0,
        1,
        num_want,
        port,
        url_data,
    ).encode()


def announce(
    core: TrackerServerCore, addr: Address, now: float = 0.0, **kwargs: object
) -> AnnounceResponse | ErrorResponse:
    cid = connect(core, addr, now)
    response = reply(core, announce_packet(cid, **kwargs), addr, now)  # type: ignore[arg-type]
    assert isinstance(response, AnnounceResponse | ErrorResponse)
    return response


# -- connect, announce, scrape --------------------------------------------------------------------


def test_connect_then_announce_then_scrape() -> None:
    core = make()
    first = announce(core, A, left=0)
    assert first == AnnounceResponse(77, 1800, 0, 1, ())
    second = announce(core, B, port=7000)
    assert second == AnnounceResponse(77, 1800, 1, 1, (PeerAddress(IPv4Address("10.0.0.1"), 6881),))
    cid = connect(core, A)
    scrape = ScrapeRequest(cid, 5, (HASH, OTHER)).encode()
    assert reply(core, scrape, A) == ScrapeResponse(5, (ScrapeStats(1, 0, 1), ScrapeStats(0, 0, 0)))
    assert core.statistics() == ServerStatistics(
        datagrams=6,
        connects=3,
        announces=2,
        scrapes=1,
        malformed=0,
        rate_limited=0,
        bad_connection_id=0,
        refused=0,
        handler_failures=0,
        errors_sent=0,
        swarms=1,
        peers=2,
        seeders=1,
        leechers=1,
        store=core.store.statistics() if core.store else None,
    )


def test_connection_id_is_bound_to_the_address_and_expires() -> None:
    core = make()
    cid = connect(core, A, now=0.0)
    # Spoofed: B uses the id A got.
    assert reply(core, announce_packet(cid), B) == ErrorResponse(77, BAD_CONNECTION_ID)
    assert reply(core, ScrapeRequest(cid, 9, (HASH,)).encode(), B) == ErrorResponse(
        9, BAD_CONNECTION_ID
    )
    # Made up.
    assert reply(core, announce_packet(12345), A) == ErrorResponse(77, BAD_CONNECTION_ID)
    # Still good a minute later, gone after two.
    assert isinstance(reply(core, announce_packet(cid), A, now=60.0), AnnounceResponse)
    assert reply(core, announce_packet(cid), A, now=120.0) == ErrorResponse(77, BAD_CONNECTION_ID)
    # Another server with another secret does not accept it.
    other = TrackerServerCore(NO_LIMIT, secret=b"t" * 32)
    assert reply(other, announce_packet(cid), A) == ErrorResponse(77, BAD_CONNECTION_ID)
    stats = core.statistics()
    assert (stats.bad_connection_id, stats.errors_sent, stats.peers) == (4, 4, 1)


def test_ipv6_announcers_get_ipv6_peers_and_ipv4_ones_ipv4_peers() -> None:
    core = make()
    announce(core, A)
    announce(core, V6)
    mapped: Address = ("::ffff:10.0.0.9", 50009, 0, 0)  # IPv4 on a dual-stack socket
    response = announce(core, mapped, port=9999)
    assert isinstance(response, AnnounceResponse)
    assert response.peers == (PeerAddress(IPv4Address("10.0.0.1"), 6881),)
    response = announce(core, V6B, port=1234)
    assert isinstance(response, AnnounceResponse)
    assert response.peers == (PeerAddress(IPv6Address("2001:db8::1"), 6881),)
    assert (response.seeders, response.leechers) == (0, 4)
    assert core.store is not None
    assert PeerAddress(IPv4Address("10.0.0.9"), 9999) in core.store.peers(HASH)
    # A link-local address with its scope.
    response = announce(core, ("fe80::1%lo", 1, 0, 1))
    assert isinstance(response, AnnounceResponse)
    assert len(response.peers) == 2


def test_the_request_ip_field_is_ignored() -> None:
    core = make()
    cid = connect(core, A)
    request = AnnounceRequest(
        cid, 1, HASH, bytes(20), 0, 5, 0, AnnounceEvent.STARTED, 0x01020304, 0, -1, 6881
    )
    assert isinstance(reply(core, request.encode(), A), AnnounceResponse)
    assert core.store is not None
    assert core.store.peers(HASH) == (PeerAddress(IPv4Address("10.0.0.1"), 6881),)


def test_num_want_default_cap_and_response_size() -> None:
    config = ServerConfig(
        rate_limit=None, default_num_want=5, max_num_want=100, max_response_size=MIN_RESPONSE_SIZE
    )
    core = make(config)
    for n in range(300):
        announce(core, (f"10.1.{n >> 8}.{n & 255}", 1000))
        announce(core, (f"2001:db8::{n + 1:x}", 1000, 0, 0))

    def peers(addr: Address, num_want: int) -> int:
        response = announce(core, addr, num_want=num_want)
        assert isinstance(response, AnnounceResponse)
        return len(response.peers)

    assert peers(A, -1) == 5
    assert peers(A, 0) == 0
    assert peers(A, 7) == 7
    assert peers(A, 1000) == 100  # max_num_want
    assert peers(V6, 1000) == (MIN_RESPONSE_SIZE - 20 - 20) // 18  # what fits: 48
    assert peers(V6, 30) == 30


def test_a_full_reply_fits_one_ethernet_frame_over_either_family() -> None:
    """Regression: the reply size counted IPv4's 28 bytes of headers over IPv6 too, so a full
    IPv6 announce reply (80 peers, 1460 bytes) made a 1508-byte packet, fragmented."""
    core = make(ServerConfig(rate_limit=None, max_num_want=1000))
    for n in range(300):
        announce(core, (f"10.1.{n >> 8}.{n & 255}", 1000))
        announce(core, (f"2001:db8::{n + 1:x}", 1000, 0, 0))
    mapped: Address = ("::ffff:10.0.0.9", 1, 0, 0)  # IPv4 on a dual-stack socket
    for addr, ipv6, size in ((A, False, 1472), (mapped, False, 1472), (V6, True, 20 + 18 * 79)):
        cid = connect(core, addr)
        [packet] = exchange(core, announce_packet(cid, num_want=1000), addr)
        response = decode_response(packet, family=6 if ipv6 else 4)
        assert isinstance(response, AnnounceResponse)
        assert len(response.peers) == (size - 20) // (18 if ipv6 else 6)  # 242 or 79
        assert len(packet) == size
        assert (40 if ipv6 else 20) + 8 + size <= 1500  # IP and UDP headers
    # A full scrape and a long error fit the smallest size allowed, over IPv6 too.
    small = make(
        ServerConfig(rate_limit=None, max_response_size=MIN_RESPONSE_SIZE),
        handler=Recorder(Refusal("x" * 2000), [ScrapeStats(1, 2, 3)] * 74),
    )
    scrape = ScrapeRequest(connect(small, V6), 4, tuple(bytes([n]) * 20 for n in range(74)))
    [packet] = exchange(small, scrape.encode(), V6)
    assert len(packet) == 8 + 12 * 74 == MIN_RESPONSE_SIZE - 20
    [packet] = exchange(small, announce_packet(connect(small, V6)), V6)
    assert decode_response(packet) == ErrorResponse(77, "x" * (MIN_RESPONSE_SIZE - 20 - 8))
    with pytest.raises(LocalProtocolError, match="at least 916"):
        ServerConfig(max_response_size=MIN_RESPONSE_SIZE - 1)


def test_stopped_and_completed() -> None:
    core = make()
    announce(core, A, left=10)
    announce(core, A, left=0, event=AnnounceEvent.COMPLETED)
    response = announce(core, B, event=AnnounceEvent.STOPPED)
    assert response == AnnounceResponse(77, 1800, 0, 1, ())
    response = announce(core, A, event=AnnounceEvent.STOPPED)
    assert response == AnnounceResponse(77, 1800, 0, 0, ())
    cid = connect(core, A)
    assert reply(core, ScrapeRequest(cid, 1, (HASH,)).encode(), A) == ScrapeResponse(
        1, (ScrapeStats(0, 1, 0),)
    )


def test_bep41_url_data_is_accepted() -> None:
    core = make()
    assert isinstance(announce(core, A, url_data=b"/announce?key=" + b"x" * 400), AnnounceResponse)
    cid = connect(core, A)
    # Options after the 98 bytes with NOP and an unknown type, then EndOfOptions and padding.
    packet = announce_packet(cid) + bytes([1, 9, 2, 0xAB, 0xCD, 0, 0, 0])
    assert isinstance(reply(core, packet, A), AnnounceResponse)
    # A truncated option is garbage.
    assert exchange(core, announce_packet(cid) + bytes([2, 5, 0x2F]), A) == []


def test_scrape_of_74_hashes_fits_and_answers_in_order() -> None:
    core = make(ServerConfig(rate_limit=None, max_response_size=MIN_RESPONSE_SIZE))
    hashes = tuple(bytes([n]) * 20 for n in range(74))
    for n in (3, 70):
        announce(core, A, info_hash=hashes[n], left=0)
    cid = connect(core, B)
    response = reply(core, ScrapeRequest(cid, 4, hashes).encode(), B)
    assert isinstance(response, ScrapeResponse)
    assert len(response.files) == 74
    assert [i for i, stats in enumerate(response.files) if stats.seeders] == [3, 70]


@pytest.mark.parametrize("count", [75, 200, 3000])
def test_a_scrape_of_more_than_74_hashes_answers_the_first_74(count: int) -> None:
    """As opentracker: the start of the scrape is answered, not nothing; never more bytes
    than the request, even at the smallest response size allowed."""
    core = make(ServerConfig(rate_limit=None, max_response_size=MIN_RESPONSE_SIZE))
    hashes = [n.to_bytes(20, "big") for n in range(count)]
    announce(core, A, info_hash=hashes[73], left=0)
    announce(core, A, info_hash=hashes[74], left=0)  # past the 74: not answered
    cid = connect(core, B)
    request = struct.pack(">QII", cid, 2, 4) + b"".join(hashes)
    [raw] = exchange(core, request, B)
    assert len(raw) == 8 + 12 * 74 < len(request)
    response = decode_response(raw)
    assert isinstance(response, ScrapeResponse)
    assert [i for i, stats in enumerate(response.files) if stats.seeders] == [73]
    assert core.statistics().scrapes == 1
    assert core.statistics().malformed == 0
    # Stray bytes after the hashes are still no scrape, nor is a bad connection id answered
    # with more than its short error.
    assert exchange(core, request + b"\x00", B) == []
    bad = struct.pack(">QII", cid ^ 1, 2, 4) + b"".join(hashes)
    [error] = exchange(core, bad, B)
    assert len(error) < len(bad)


# -- allow and deny lists ---------------------------------------------------------------------


def test_allow_list_refuses_other_torrents() -> None:
    core = make(ServerConfig(rate_limit=None, allowed_info_hashes=frozenset({HASH})))
    assert isinstance(announce(core, A), AnnounceResponse)
    assert announce(core, A, info_hash=OTHER) == ErrorResponse(77, NOT_REGISTERED)
    cid = connect(core, A)
    # A scrape answers zeros for a torrent not served, whatever is known of it.
    core.set_allowed_info_hashes([OTHER])
    assert core.allowed_info_hashes == frozenset({OTHER})
    assert reply(core, ScrapeRequest(cid, 1, (HASH, OTHER)).encode(), A) == ScrapeResponse(
        1, (ScrapeStats(0, 0, 0), ScrapeStats(0, 0, 0))
    )
    assert announce(core, A) == ErrorResponse(77, NOT_REGISTERED)
    core.set_allowed_info_hashes(None)
    assert isinstance(announce(core, A, info_hash=OTHER), AnnounceResponse)
    assert core.statistics().refused == 2


def test_deny_list_and_info_hash_forms() -> None:
    hybrid = InfoHash(v1=HASH, v2=b"\x33" * 32)
    core = make(ServerConfig(rate_limit=None, denied_info_hashes=frozenset({OTHER})))
    assert core.denied_info_hashes == frozenset({OTHER})
    assert announce(core, A, info_hash=OTHER) == ErrorResponse(77, DENIED)
    core.set_denied_info_hashes([hybrid])
    assert announce(core, A, info_hash=b"\x33" * 20) == ErrorResponse(77, DENIED)
    assert announce(core, A, info_hash=HASH) == ErrorResponse(77, DENIED)
    assert isinstance(announce(core, A, info_hash=OTHER), AnnounceResponse)
    core.set_allowed_info_hashes([b"\x44" * 32])  # a v2 hash: its first 20 bytes
    assert core.allowed_info_hashes == frozenset({b"\x44" * 20})
    with pytest.raises(LocalProtocolError, match="allow list"):
        core.set_allowed_info_hashes([b"short"])
    with pytest.raises(LocalProtocolError, match="deny list"):
        core.set_denied_info_hashes(["a" * 20])  # type: ignore[list-item]


# -- garbage and rate limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x00" * 15,
        ConnectRequest(1).encode() + b"\x00",  # too long
        (PROTOCOL_ID + 1).to_bytes(8, "big") + bytes(8),  # wrong protocol id
        bytes(8) + (1).to_bytes(4, "big") + bytes(81),  # announce of 97 bytes
        bytes(8) + (2).to_bytes(4, "big") + bytes(4),  # scrape of no hash
        bytes(8) + (2).to_bytes(4, "big") + bytes(25),  # scrape of 1.25 hashes
        bytes(8) + (3).to_bytes(4, "big") + bytes(4),  # action 3 is no request
        bytes(8) + (77).to_bytes(4, "big") + bytes(4),
    ],
)
def test_garbage_gets_no_answer(packet: bytes) -> None:
    core = make()
    assert exchange(core, packet, A) == []
    assert core.statistics().malformed == 1


def test_unknown_event_is_a_regular_announce() -> None:
    core = make()
    cid = connect(core, A)
    packet = bytearray(announce_packet(cid))
    packet[80:84] = (5).to_bytes(4, "big")  # (4, paused: test_server_paused.py)
    assert reply(core, bytes(packet), A) == AnnounceResponse(77, 1800, 1, 0, ())
    stats = core.statistics()
    assert (stats.announces, stats.unknown_events, stats.malformed) == (1, 1, 0)


def test_rate_limit_per_address() -> None:
    core = make(ServerConfig(rate_limit=10.0, rate_burst=3))
    packet = ConnectRequest(1).encode()
    assert [len(exchange(core, packet, A, now=0.0)) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert len(exchange(core, packet, B, now=0.0)) == 1  # another address has its own bucket
    assert len(exchange(core, packet, A, now=0.05)) == 0  # half a token
    assert len(exchange(core, packet, A, now=0.1)) == 1
    assert [len(exchange(core, packet, A, now=10.0)) for _ in range(4)] == [1, 1, 1, 0]
    stats = core.statistics()
    assert (stats.rate_limited, stats.connects, stats.datagrams) == (4, 8, 12)


def test_rate_limiter_memory_is_bounded() -> None:
    core = make(ServerConfig(rate_limit=1.0, rate_burst=2, max_rate_limited_addresses=100))
    packet = ConnectRequest(1).encode()
    for n in range(5_000):
        exchange(core, packet, (f"10.2.{n >> 8}.{n & 255}", 1), now=n * 1e-4)
    limiter = core._limiter
    assert limiter is not None
    assert len(limiter) <= 100
    # Idle buckets are forgotten at the timer (not before they are full again).
    core.handle_timer(10.0)
    remembered = len(limiter)
    core.handle_timer(10.5)
    assert len(limiter) == remembered
    core.handle_timer(20.0)
    assert len(limiter) == 0


# -- custom handlers ------------------------------------------------------------------------------


class Recorder:
    """A handler that answers from a script and records its calls."""

    def __init__(self, answer: object, stats: object = ()) -> None:
        self.answer = answer
        self.stats = stats
        self.calls: list[tuple[object, ...]] = []

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        self.calls.append((request.url_data, peer, num_want, now))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats] | Refusal:
        self.calls.append((tuple(info_hashes), now))
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats  # type: ignore[return-value]


def test_custom_handler_answers() -> None:
    peer = bytes([1, 2, 3, 4, 0, 80])
    handler = Recorder(AnnounceAnswer(5, 6, (peer,) * 100, interval=60), [ScrapeStats(1, 2, 3)])
    core = make(ServerConfig(rate_limit=None, max_num_want=10), handler=handler)
    assert core.store is None
    response = announce(core, A, url_data=b"/secret", now=5.0)
    assert response == AnnounceResponse(
        77, 60, 6, 5, (PeerAddress(IPv4Address("1.2.3.4"), 80),) * 10
    )
    assert handler.calls == [
        (b"/secret", bytes([10, 0, 0, 1]) + (6881).to_bytes(2, "big"), 10, 5.0)
    ]
    core.set_denied_info_hashes([OTHER])
    cid = connect(core, A)
    scraped = reply(core, ScrapeRequest(cid, 3, (OTHER, HASH)).encode(), A, now=6.0)
    assert scraped == ScrapeResponse(3, (ScrapeStats(0, 0, 0), ScrapeStats(1, 2, 3)))
    assert handler.calls[-1] == ((HASH,), 6.0)
    # Only denied hashes: the handler is not asked.
    calls = len(handler.calls)
    assert reply(core, ScrapeRequest(cid, 3, (OTHER,)).encode(), A) == ScrapeResponse(
        3, (ScrapeStats(0, 0, 0),)
    )
    assert len(handler.calls) == calls
    stats = core.statistics()
    assert (stats.swarms, stats.peers) == (0, 0)


def test_custom_handler_refuses() -> None:
    handler = Recorder(Refusal("no passkey"), Refusal("no scrapes here"))
    core = make(handler=handler)
    assert announce(core, A) == ErrorResponse(77, "no passkey")
    cid = connect(core, A)
    assert reply(core, ScrapeRequest(cid, 3, (HASH,)).encode(), A) == ErrorResponse(
        3, "no scrapes here"
    )
    assert core.statistics().refused == 2


_CLAMPED = ScrapeResponse(3, (ScrapeStats(2**31 - 1, 0, 0),))
_FAILED = ErrorResponse(3, INTERNAL_ERROR)


@pytest.mark.parametrize(
    ("answer", "stats", "scraped"),
    [
        (RuntimeError("bug"), RuntimeError("bug"), _FAILED),
        ("not an answer", ["not stats"], _FAILED),
        (AnnounceAnswer(1, 1, (b"\x00" * 18,)), [ScrapeStats(1, 1, 1)] * 2, _FAILED),
        # Counters beyond int32: an announce's are the handler's bug, a scrape's are clamped
        # (a completed counter may really grow that large).
        (AnnounceAnswer(2**40, 1), [ScrapeStats(2**40, 0, 0)], _CLAMPED),
        (AnnounceAnswer(1, -(2**40)), [ScrapeStats(-(2**40), 0, 0)], _FAILED),
        (AnnounceAnswer("1", 1), [ScrapeStats("1", 0, 0)], _FAILED),  # type: ignore[arg-type]
    ],
)
def test_a_failing_handler_costs_one_request(
    answer: object, stats: object, scraped: object, caplog: pytest.LogCaptureFixture
) -> None:
    core = make(handler=Recorder(answer, stats))
    with caplog.at_level(logging.ERROR, logger="bip_utracker.server"):
        assert announce(core, A) == ErrorResponse(77, INTERNAL_ERROR)
        cid = connect(core, A)
        assert reply(core, ScrapeRequest(cid, 3, (HASH,)).encode(), A) == scraped
    assert core.statistics().handler_failures == (1 if scraped is _CLAMPED else 2)
    assert "tracker handler failed" in caplog.text


def test_own_swarm_store_as_handler() -> None:
    store = SwarmStore(max_swarms=1, rng=random.Random(1))
    core = make(handler=store)
    assert core.store is store
    announce(core, A)
    announce(core, A, info_hash=OTHER)
    assert list(store.info_hashes()) == [OTHER]


def test_long_error_messages_are_cut_to_fit() -> None:
    core = make(
        ServerConfig(rate_limit=None, max_response_size=MIN_RESPONSE_SIZE),
        handler=Recorder(Refusal("é" * 1000)),
    )
    cid = connect(core, A)
    (packet,) = exchange(core, announce_packet(cid), A)
    assert len(packet) <= MIN_RESPONSE_SIZE
    response = decode_response(packet)
    assert response == ErrorResponse(77, "é" * ((MIN_RESPONSE_SIZE - 8) // 2))


# -- timers and configuration ---------------------------------------------------------------------


def test_timer_expires_quiet_swarms_in_batches() -> None:
    core = make(ServerConfig(rate_limit=None, interval=100, peer_grace=50, expiry_interval=30))
    assert core.next_deadline() is None
    core.handle_timer(0.0)
    assert core.next_deadline() == 30.0
    store = core.store
    assert store is not None
    for n in range(12_000):
        store.announce_compact(n.to_bytes(20, "big"), bytes(4) + b"\x1a\xe1", 1, 2, 0, 1.0)
    announce(core, A, now=100.0)
    core.handle_timer(151.0)
    assert core.next_deadline() == 151.0  # more to drop: at once
    core.handle_timer(151.0)
    assert core.next_deadline() == 181.0
    assert core.statistics().swarms == 1
    core.handle_timer(250.0)
    assert core.statistics().swarms == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0}, "interval"),
        ({"peer_grace": -1}, "peer_grace"),
        ({"max_num_want": 0}, "max_num_want"),
        ({"default_num_want": -1}, "default_num_want"),
        ({"default_num_want": 1.5}, "default_num_want"),
        ({"max_response_size": 100}, "max_response_size"),
        ({"max_response_size": 70_000}, "max_response_size"),
        ({"max_swarms": 0}, "max_swarms"),
        ({"max_peers": 10, "max_peers_per_swarm": 20}, "max_peers"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_burst": 0}, "rate_burst"),
        ({"allowed_info_hashes": frozenset({b"x"})}, "allowed_info_hashes"),
        ({"denied_info_hashes": frozenset({1})}, "denied_info_hashes"),
        ({"connection_id_window": 0}, "connection_id_window"),
        ({"expiry_interval": float("inf")}, "expiry_interval"),
    ],
)
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError, match="ServerConfig"):
        TrackerServerCore({"interval": 5})  # type: ignore[arg-type]
    core = make()
    with pytest.raises(LocalProtocolError, match="host text"):
        core.receive_datagram(ConnectRequest(1).encode(), (b"10.0.0.1", 1), 0.0)
    cid = connect(core, ("not an address", 1))
    with pytest.raises(LocalProtocolError, match="not an IP address"):
        core.receive_datagram(announce_packet(cid), ("not an address", 1), 0.0)


# -- properties -----------------------------------------------------------------------------------


def _accepted_by_codec(data: bytes) -> bool:
    try:
        decode_request(data)
    except MalformedPacketError:
        return False
    return True


_valid_packets = st.sampled_from(
    [
        ConnectRequest(1).encode(),
        announce_packet(5),
        announce_packet(5, url_data=b"/a"),
        ScrapeRequest(5, 1, (HASH, OTHER)).encode(),
    ]
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(_valid_packets, st.integers(0, 120), st.binary(max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
        ),
    )
)
def test_property_any_datagram_is_answered_iff_it_is_a_request(data: bytes) -> None:
    """The hot path's own parsing agrees with the codec: no answer for exactly the garbage, and
    no exception, whatever arrives."""
    core = make(ServerConfig(rate_limit=None, allowed_info_hashes=frozenset({HASH})))
    core.receive_datagram(data, A, 0.0)
    sent = core.datagrams_to_send()
    assert len(sent) == (1 if _accepted_by_codec(data) else 0)
    for packet, _ in sent:
        assert len(packet) <= core.config.max_response_size
        decode_response(packet)  # a valid response


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # client
            st.booleans(),  # IPv6
            st.sampled_from(list(AnnounceEvent)),
            st.integers(-1, 300),  # num_want
            st.integers(0, 2),  # swarm
        ),
        max_size=60,
    ),
    st.integers(MIN_RESPONSE_SIZE, 1500),
)
def test_property_responses_fit_and_never_name_the_announcer(
    steps: list[tuple[int, bool, AnnounceEvent, int, int]], max_response_size: int
) -> None:
    core = make(ServerConfig(rate_limit=None, max_response_size=max_response_size))
    for client, ipv6, event, num_want, swarm in steps:
        addr: Address = (f"2001:db8::{client + 1:x}", 1, 0, 0) if ipv6 else (f"10.3.0.{client}", 1)
        response = announce(
            core, addr, event=event, num_want=num_want, info_hash=bytes([swarm]) * 20, port=5000
        )
        assert isinstance(response, AnnounceResponse)
        me = PeerAddress(IPv6Address(addr[0]) if ipv6 else IPv4Address(addr[0]), 5000)
        assert me not in response.peers
        assert all(peer.family == (6 if ipv6 else 4) for peer in response.peers)


def test_ipv6_rate_limit_is_per_64_network() -> None:
    core = make(ServerConfig(rate_limit=1.0, rate_burst=2))
    packet = ConnectRequest(1).encode()
    one_network = [(f"2001:db8:0:1::{n:x}", 1, 0, 0) for n in range(1, 4)]
    assert [len(exchange(core, packet, addr)) for addr in one_network] == [1, 1, 0]
    assert len(exchange(core, packet, ("2001:db8:0:2::1", 1, 0, 0))) == 1  # another /64
    # IPv4 clients on a dual-stack socket are limited one by one.
    mapped = [(f"::ffff:10.0.0.{n}", 1, 0, 0) for n in range(1, 5)]
    assert [len(exchange(core, packet, addr)) for addr in mapped] == [1, 1, 1, 1]
    # A host that is no address is its own key (and refused when it announces).
    assert len(exchange(core, packet, ("fe80::zz", 1, 0, 0))) == 1
