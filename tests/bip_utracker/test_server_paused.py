"""The UDP tracker server takes libtorrent's BEP 21 ``paused`` announce (event 4).

libtorrent writes its ``event_t::paused`` (4) unchanged into a UDP announce for every regular
announce of a partial seed (finished, not a seed), its first one included. BEP 15 defines only 0
to 3, and the server used to drop the datagram as malformed: the partial seed timed out and
stayed out of the swarm. Now 4 is a regular announce of a peer with ``left`` > 0 (a leecher in
BEP 15's counts), and the decoded request says ``paused``; any other unknown value is a regular
announce too, as opentracker serves it, counted in ``unknown_events``. Our client stays strict:
:meth:`AnnounceRequest.encode` sends 0 to 3 only, and refuses ``paused``. Sans-IO throughout
(tests/interop/test_libtorrent_paused_udp.py has the real libtorrent).
"""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests._announce_fakes import RecordingHandler

from bip_utracker._codec import (
    ANNOUNCE_REQUEST_SIZE,
    PAUSED_EVENT,
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
from bip_utracker._errors import LocalProtocolError
from bip_utracker._server_core import (
    BAD_CONNECTION_ID,
    Address,
    ServerConfig,
    TrackerServerCore,
)

HASH = b"\x21" * 20
PEER_ID = b"-LT2110-" + bytes(12)
A: Address = ("10.0.0.1", 50001)
B: Address = ("10.0.0.2", 50002)
EVENT_AT = 80  # the event field's offset in an announce request
PARTIAL_LEFT = 5000  # what a partial seed still lacks: the files it skips


def make(handler: object = None) -> TrackerServerCore:
    config = ServerConfig(rate_limit=None)
    return TrackerServerCore(config, handler=handler, secret=b"s" * 32, rng=random.Random(1))  # type: ignore[arg-type]


def reply(
    core: TrackerServerCore, data: bytes, addr: Address
) -> ConnectResponse | AnnounceResponse | ScrapeResponse | ErrorResponse | None:
    core.receive_datagram(data, addr, 0.0)
    sent = core.datagrams_to_send()
    if not sent:
        return None
    ((packet, destination),) = sent
    assert destination is addr
    response = decode_response(packet)
    assert isinstance(response, ConnectResponse | AnnounceResponse | ScrapeResponse | ErrorResponse)
    return response


def connect(core: TrackerServerCore, addr: Address) -> int:
    response = reply(core, ConnectRequest(7).encode(), addr)
    assert isinstance(response, ConnectResponse)
    return response.connection_id


def announce_with(
    cid: int, event: int, *, left: int = PARTIAL_LEFT, port: int = 6881, options: bytes = b""
) -> bytes:
    """An announce request whose event field holds *event* (any 32-bit value), as a libtorrent
    partial seed writes it; encode() would refuse anything but 0 to 3."""
    raw = bytearray(
        AnnounceRequest(
            cid, 9, HASH, PEER_ID, 100, left, 0, AnnounceEvent.NONE, 0, 3, -1, port
        ).encode()
    )
    raw[EVENT_AT : EVENT_AT + 4] = (event & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(raw) + options


def scrape(core: TrackerServerCore, addr: Address) -> ScrapeStats:
    response = reply(core, ScrapeRequest(connect(core, addr), 4, (HASH,)).encode(), addr)
    assert isinstance(response, ScrapeResponse)
    (stats,) = response.files
    return stats


# -- the built-in store ---------------------------------------------------------------------------


def test_a_paused_announce_is_answered_and_counted_as_a_leecher() -> None:
    core = make()
    cid = connect(core, A)
    response = reply(core, announce_with(cid, PAUSED_EVENT), A)
    assert response == AnnounceResponse(9, 1800, 1, 0, ())  # one leecher: itself
    # Another peer sees it, and among the leechers (BEP 15 counts no partial seeds).
    other = reply(core, announce_with(connect(core, B), AnnounceEvent.STARTED, left=0), B)
    assert isinstance(other, AnnounceResponse)
    assert (other.leechers, other.seeders, [str(p) for p in other.peers]) == (
        1,
        1,
        ["10.0.0.1:6881"],
    )
    assert scrape(core, A) == ScrapeStats(seeders=1, completed=0, leechers=1)
    stats = core.statistics()
    assert (stats.announces, stats.malformed, stats.unknown_events) == (2, 0, 0)


def test_paused_is_neither_stopped_nor_completed() -> None:
    core = make()
    cid = connect(core, A)
    reply(core, announce_with(cid, AnnounceEvent.STARTED), A)
    for _ in range(3):  # regular announces of a partial seed: it stays, nothing completes
        assert reply(core, announce_with(cid, PAUSED_EVENT), A) == AnnounceResponse(
            9, 1800, 1, 0, ()
        )
    assert scrape(core, A) == ScrapeStats(seeders=0, completed=0, leechers=1)
    # Its selection grown and done: completed, a seeder now.
    reply(core, announce_with(cid, AnnounceEvent.COMPLETED, left=0), A)
    assert scrape(core, A) == ScrapeStats(seeders=1, completed=1, leechers=0)
    reply(core, announce_with(cid, AnnounceEvent.STOPPED, left=0), A)
    assert scrape(core, A) == ScrapeStats(seeders=0, completed=1, leechers=0)


@pytest.mark.parametrize("event", [5, 0x7FFFFFFF, -1, -(2**31)])
def test_an_unknown_event_is_a_regular_announce_and_counted(event: int) -> None:
    core = make()
    cid = connect(core, A)
    assert reply(core, announce_with(cid, event), A) == AnnounceResponse(9, 1800, 1, 0, ())
    assert scrape(core, A) == ScrapeStats(seeders=0, completed=0, leechers=1)
    stats = core.statistics()
    assert (stats.announces, stats.unknown_events, stats.malformed) == (1, 1, 0)


def test_the_shape_still_decides_malformed() -> None:
    core = make()
    cid = connect(core, A)
    # Event 4 with an option that declares more bytes than follow: malformed, as ever.
    assert reply(core, announce_with(cid, PAUSED_EVENT, options=b"\x02\x09ab"), A) is None
    assert reply(core, announce_with(cid, PAUSED_EVENT)[: ANNOUNCE_REQUEST_SIZE - 1], A) is None
    stats = core.statistics()
    assert (stats.announces, stats.unknown_events, stats.malformed) == (0, 0, 2)


def test_a_paused_announce_still_needs_its_connection_id() -> None:
    core = make()
    assert reply(core, announce_with(12345, PAUSED_EVENT), A) == ErrorResponse(9, BAD_CONNECTION_ID)
    stats = core.statistics()
    assert (stats.bad_connection_id, stats.peers) == (1, 0)


def test_an_unknown_event_refused_for_its_connection_id_is_not_counted() -> None:
    # unknown_events counts the announces served so: a forged datagram is not one.
    core = make()
    assert reply(core, announce_with(12345, 7), A) == ErrorResponse(9, BAD_CONNECTION_ID)
    stats = core.statistics()
    assert (stats.bad_connection_id, stats.unknown_events) == (1, 0)


# -- a custom handler -----------------------------------------------------------------------------


def test_a_custom_handler_is_told_paused() -> None:
    recorder = RecordingHandler()
    core = make(recorder)
    cid = connect(core, A)
    for event in (PAUSED_EVENT, 9, AnnounceEvent.NONE):
        assert reply(core, announce_with(cid, event), A) == AnnounceResponse(9, 1800, 1, 0, ())
    assert [(r.event, r.paused, r.left) for r in recorder.requests] == [
        (AnnounceEvent.NONE, True, PARTIAL_LEFT),
        (AnnounceEvent.NONE, False, PARTIAL_LEFT),  # unknown: none, not paused
        (AnnounceEvent.NONE, False, PARTIAL_LEFT),
    ]
    assert core.statistics().unknown_events == 1


# -- the codec ------------------------------------------------------------------------------------


def test_decode_reads_4_as_paused_and_encode_refuses_it() -> None:
    decoded = decode_request(announce_with(1, PAUSED_EVENT))
    assert isinstance(decoded, AnnounceRequest)
    assert (decoded.event, decoded.paused) == (AnnounceEvent.NONE, True)
    # Our client never sends it: a UDP tracker may drop it, or (aquatic) answer an error.
    with pytest.raises(LocalProtocolError, match="paused"):
        decoded.encode()
    plain = dataclasses.replace(decoded, paused=False)
    assert plain.encode() == announce_with(1, AnnounceEvent.NONE)
    assert decode_request(plain.encode()) == plain


_EVENT = struct.Struct(">i")


@settings(max_examples=60, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1), st.booleans())
def test_any_event_value_decodes(event: int, with_options: bool) -> None:
    raw = announce_with(1, event, options=b"\x02\x02ab" if with_options else b"")
    decoded = decode_request(raw)
    assert isinstance(decoded, AnnounceRequest)
    assert decoded.paused is (event == PAUSED_EVENT)
    assert decoded.event == (event if 0 <= event <= 3 else AnnounceEvent.NONE)
    if 0 <= event <= 3:  # BEP 15's values round-trip bit for bit
        assert decoded.encode() == raw
    else:  # the rest are sent as none (once paused is cleared): never as they came
        sent = dataclasses.replace(decoded, paused=False).encode()
        assert _EVENT.unpack_from(sent, EVENT_AT) == (0,)
