"""Metadata requests are paced as libtorrent's ``ut_metadata`` paces them, and a peer that stops
answering is disconnected (so that it may be dialled again) rather than kept for ever.

rtorrent 0.9.8 drops a ``ut_metadata`` request that arrives while its reply to the previous one
is unsent, and stops reading the connection: asked for pieces 0 and 1 back to back the moment
its extended handshake came, it answered piece 0 and nothing more, and a magnet whose info
dictionary is larger than 16 KiB hung for good with rtorrent as its only peer. libtorrent sends
one request per event (the handshake, an answer, a one-second tick), two in flight at most.

A peer that advertised no ``metadata_size`` was probed for piece 0 again every
``rerequest_delay`` (3 s) while its probe was outstanding, each probe resetting the last one's
clock: 20 requests a minute to a silent peer, which never timed out and never stalled.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

import _managers
import pytest
import trio
import trio.testing
from _managers import node

from bip_bencode import encode
from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer._exchange import MetadataExchange, MetadataFetchError
from bip_peer._extended import METADATA_PIECE_SIZE, MetadataData, MetadataRequest
from bip_peer._manager import Peer, PeerManager
from bip_peer._metadata import (
    DEFAULT_MAX_REQUESTS_PER_PEER,
    DEFAULT_MAX_TIMEOUTS,
    DEFAULT_METADATA_REQUEST_INTERVAL,
    DEFAULT_METADATA_STALL_BACKOFF,
    MetadataFetcher,
)


def make_info(pieces: int) -> bytes:
    """An info dictionary of a little over ``pieces - 1`` metadata pieces."""
    hashes = random.Random(11).randbytes(20 * ((pieces - 1) * METADATA_PIECE_SIZE // 20 + 1))
    return encode({b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": hashes})


INFO = make_info(4)  # four metadata pieces
IH = InfoHash.from_info_bytes(INFO, v1=True)


def answer(piece: int) -> MetadataData:
    start = piece * METADATA_PIECE_SIZE
    return MetadataData(piece, len(INFO), INFO[start : start + METADATA_PIECE_SIZE])


def paced(**options: Any) -> MetadataFetcher[str]:
    """A fetcher paced as a MetadataExchange paces its own."""
    return MetadataFetcher(IH, request_interval=DEFAULT_METADATA_REQUEST_INTERVAL, **options)


def drain(fetcher: MetadataFetcher[str], peer: str, now: float) -> list[int]:
    pieces = []
    while (request := fetcher.next_request(peer, now)) is not None:
        pieces.append(request.piece)
    return pieces


# --------------------------------------------------------------------------- sans-IO pacing


def test_a_fresh_peer_gets_one_request_before_its_first_answer() -> None:
    fetcher = paced()
    fetcher.add_peer("rt", len(INFO))
    assert drain(fetcher, "rt", 0.0) == [0]  # not [0, 1]: rtorrent goes deaf on the second
    assert drain(fetcher, "rt", 0.5) == []
    fetcher.on_data("rt", answer(0), 0.6)
    assert drain(fetcher, "rt", 0.6) == [1]  # one request per answer
    assert fetcher.next_deadline() == pytest.approx(1.0)  # the first tick
    fetcher.handle_timer(1.0)
    assert drain(fetcher, "rt", 1.0) == [2]  # one more a tick: two in flight
    # Piece 1's re-request moment: no tick while two are in flight.
    assert fetcher.next_deadline() == pytest.approx(3.6)
    fetcher.on_data("rt", answer(1), 2.7)
    assert drain(fetcher, "rt", 2.7) == [3]
    fetcher.on_data("rt", answer(2), 2.8)
    fetcher.on_data("rt", answer(3), 2.9)
    assert fetcher.result() == INFO


def test_a_fresh_peer_without_a_size_gets_one_probe() -> None:
    fetcher = paced()
    fetcher.add_peer("rt", None)
    assert drain(fetcher, "rt", 0.0) == [0]
    fetcher.on_data("rt", answer(0), 0.1)  # its total_size tells the size
    assert drain(fetcher, "rt", 0.1) == [1]


def test_without_a_request_interval_a_peer_is_sent_two_at_once() -> None:
    # The sans-IO default is unchanged: the caller paces (MetadataExchange gives 1 s).
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]


def test_paced_peers_are_each_asked_at_once() -> None:
    # Pacing is per peer: a second peer is not kept waiting by the first one's request.
    fetcher = paced()
    fetcher.add_peer("a", len(INFO))
    fetcher.add_peer("b", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 0.0) == [1]


@pytest.mark.parametrize("interval", [None, DEFAULT_METADATA_REQUEST_INTERVAL])
def test_a_silent_peer_without_a_size_is_probed_a_few_times_a_stall(
    interval: float | None,
) -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, request_interval=interval)
    fetcher.add_peer("silent", None)
    sent: list[float] = []
    now = 0.0
    for _ in range(1000):  # bounded: each pass moves to the next deadline
        sent.extend(now for _ in drain(fetcher, "silent", now))
        deadline = fetcher.next_deadline()
        if deadline is None or deadline > 180.0:
            break
        assert deadline > now  # never a deadline that is already past
        now = deadline
        fetcher.handle_timer(now)
    stalls = 180.0 / DEFAULT_METADATA_STALL_BACKOFF
    # Three minutes used to cost 60 probes (one every 3 s), none of them ever timing out.
    assert len(sent) <= stalls * (DEFAULT_MAX_TIMEOUTS + DEFAULT_MAX_REQUESTS_PER_PEER - 1)
    assert fetcher.statistics().timeouts >= DEFAULT_MAX_TIMEOUTS


# --------------------------------------------------------------------------- silent peers


def run_until(fetcher: MetadataFetcher[str], peer: str, end: float) -> float:
    """Ask ``peer`` whatever is due, deadline after deadline, until ``end``; the time reached."""
    now = 0.0
    for _ in range(1000):
        drain(fetcher, peer, now)
        deadline = fetcher.next_deadline()
        if deadline is None or deadline > end:
            return now
        now = deadline
        fetcher.handle_timer(now)
    raise AssertionError("the fetcher's deadlines did not move on")


def test_a_slow_peer_whose_answers_come_late_is_stalled_and_kept() -> None:
    # It stalls (its requests time out), but it answers: it is kept, and asked again later.
    fetcher = paced(max_timeouts=2)
    fetcher.add_peer("slow", len(INFO))
    assert drain(fetcher, "slow", 0.0) == [0]
    fetcher.handle_timer(1.0)
    assert drain(fetcher, "slow", 1.0) == [1]
    fetcher.handle_timer(10.0)  # piece 0 times out
    fetcher.on_data("slow", answer(0), 10.5)  # late, but an answer
    fetcher.handle_timer(11.0)  # piece 1 times out: two timeouts, stalled
    assert fetcher.statistics().timeouts == 2
    assert fetcher.peers == {"slow"}
    assert fetcher.next_deadline() == pytest.approx(71.0)  # the stall back-off, as before


# --------------------------------------------------------------------------- over the wire


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


connect = functools.partial(_managers.connect, info_hash=IH)


class RtorrentLike:
    """A MetadataExchange that answers as rtorrent 0.9.8 does: each reply ``delay`` seconds
    after its request; a request that comes while a reply is pending is dropped, and nothing
    is answered on that connection from then on (rtorrent stops reading it). ``log`` records
    ``("request", piece)`` and ``("reply", piece)`` in order; ``answer_first`` limits it to
    answering that many requests (then silent, as if deaf)."""

    def __init__(
        self,
        inner: MetadataExchange,
        nursery: trio.Nursery,
        *,
        delay: float = 0.05,
        answer_first: int | None = None,
    ) -> None:
        self.inner, self.nursery, self.delay = inner, nursery, delay
        self.answer_first = answer_first
        self.log: list[tuple[str, int]] = []
        self.pending = False
        self.deaf = False

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return self.inner.handshake_fields(peer)

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        self.inner.peer_added(manager, peer)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if not isinstance(message, MetadataRequest):
            return self.inner.message_received(manager, peer, message)
        self.log.append(("request", message.piece))
        replies = sum(1 for kind, _ in self.log if kind == "reply")
        if self.pending or (self.answer_first is not None and replies >= self.answer_first):
            self.deaf = True
        if self.deaf:
            return True
        self.pending = True

        async def later() -> None:
            await trio.sleep(self.delay)
            self.pending = False
            self.log.append(("reply", message.piece))
            self.inner.message_received(manager, peer, message)

        self.nursery.start_soon(later)
        return True

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        self.inner.peer_removed(manager, peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        self.inner.tick(manager, now)


async def test_a_peer_that_goes_deaf_on_a_pipelined_request_gives_the_metadata(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed_ex = MetadataExchange()
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        # Its reply unsent 50 ms: one pending at a tick (half a second, say) makes it deaf
        # under libtorrent's pacing as under ours (see bip_peer._metadata).
        rtorrent = RtorrentLike(seed_ex, nursery, delay=0.05)
        async with (
            node(nursery, addr(1), [rtorrent]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with trio.fail_after(30):
                assert await leech_ex.fetch(leech.manager, IH, timeout=20) == INFO
            assert not rtorrent.deaf
            # The first request was alone until its answer came.
            assert rtorrent.log[:3] == [("request", 0), ("reply", 0), ("request", 1)]
        nursery.cancel_scope.cancel()


async def test_a_peer_that_stops_answering_is_kept_and_asked_a_few_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed_ex = MetadataExchange()
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        deaf = RtorrentLike(seed_ex, nursery, answer_first=1)
        async with (
            node(nursery, addr(1), [deaf]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, IH, timeout=150)
            # Not removed (libtorrent disconnects for no ut_metadata silence: the manager's
            # idle timeout drops a peer that sends nothing), and asked a few requests a stall
            # (two stalls and a bit in 150 s), not a stream.
            assert leech.removed() == []
            requests = [piece for kind, piece in deaf.log if kind == "request"]
            per_stall = DEFAULT_MAX_TIMEOUTS + DEFAULT_MAX_REQUESTS_PER_PEER - 1
            assert len(requests) <= 1 + 3 * per_stall
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- review of d8d1331
#
# The pacing let one more request follow an unanswered one only once the last request was a
# second old; each answer sent the next request at once and so restarted that second: a peer
# answering within a second was never sent a second request, and a fetch from it took twice
# as long. libtorrent's ut_metadata sends one request on the extended handshake, one per
# answer, and one at every one-second tick while fewer than two are outstanding, whatever the
# time of the last. And it never disconnects a peer for ut_metadata silence (only its general
# inactivity timeout does): a seeder that paused, or a slow one, was removed while its answers
# were still coming.


def test_a_tick_sends_one_more_whatever_the_time_of_the_last_request() -> None:
    fetcher = paced()
    fetcher.add_peer("fast", len(INFO))
    assert drain(fetcher, "fast", 0.0) == [0]  # the first alone
    fetcher.on_data("fast", answer(0), 0.9)
    assert drain(fetcher, "fast", 0.9) == [1]  # one per answer
    assert fetcher.next_deadline() == pytest.approx(1.0)  # the tick, not 0.9 + 1
    fetcher.handle_timer(1.0)
    assert drain(fetcher, "fast", 1.0) == [2]  # one more at the tick: two in flight
    fetcher.on_data("fast", answer(1), 1.1)
    assert drain(fetcher, "fast", 1.1) == [3]  # an answer keeps two in flight
    fetcher.on_data("fast", answer(2), 1.2)
    fetcher.on_data("fast", answer(3), 1.3)
    assert fetcher.result() == INFO


def test_a_tick_sends_nothing_to_a_peer_with_two_in_flight() -> None:
    fetcher = paced()
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0]
    fetcher.handle_timer(1.0)
    assert drain(fetcher, "a", 1.0) == [1]
    fetcher.handle_timer(2.0)
    assert drain(fetcher, "a", 2.0) == []  # two in flight: the tick is lost
    fetcher.on_data("a", answer(0), 2.5)
    assert drain(fetcher, "a", 2.5) == [2]  # one per answer, never two
    assert drain(fetcher, "a", 2.6) == []


class Counting:
    """A MetadataExchange that answers each request ``delay`` seconds after it came (a round
    trip), in order, once pausing ``pause`` seconds after ``pause_after`` replies, and records
    the most requests it had in flight at once."""

    def __init__(
        self,
        inner: MetadataExchange,
        nursery: trio.Nursery,
        *,
        delay: float,
        pause_after: int | None = None,
        pause: float = 0.0,
    ) -> None:
        self.inner, self.nursery, self.delay = inner, nursery, delay
        self.pause_after, self.pause = pause_after, pause
        self.in_flight = 0
        self.most_in_flight = 0
        self.replies = 0
        self.last_reply = 0.0

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return self.inner.handshake_fields(peer)

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        self.inner.peer_added(manager, peer)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if not isinstance(message, MetadataRequest):
            return self.inner.message_received(manager, peer, message)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        reply = max(trio.current_time() + self.delay, self.last_reply)
        if self.pause_after is not None and self.replies >= self.pause_after and self.pause:
            reply, self.pause = reply + self.pause, 0.0  # once
        self.last_reply = reply

        async def later(at: float) -> None:
            await trio.sleep_until(at)
            self.in_flight -= 1
            self.replies += 1
            self.inner.message_received(manager, peer, message)

        self.nursery.start_soon(later, reply)
        return True

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        self.inner.peer_removed(manager, peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        self.inner.tick(manager, now)


BIG_INFO = make_info(40)
BIG_IH = InfoHash.from_info_bytes(BIG_INFO, v1=True)


async def test_a_fast_peer_is_sent_two_requests_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed_ex = MetadataExchange()
    seed_ex.serve(BIG_IH, BIG_INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        seed_service = Counting(seed_ex, nursery, delay=0.2)
        async with (
            node(nursery, addr(1), [seed_service]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            _managers.connect(leech, seed, info_hash=BIG_IH)
            start = trio.current_time()
            with trio.fail_after(30):
                assert await leech_ex.fetch(leech.manager, BIG_IH, timeout=20) == BIG_INFO
            took = trio.current_time() - start
            # Two in flight once the first tick came: 40 round trips of 0.2 s, two at a time
            # (4.5 s), not one after the other (8 s before).
            assert seed_service.most_in_flight == DEFAULT_MAX_REQUESTS_PER_PEER
            assert took < 40 * 0.2 * 0.65
        nursery.cancel_scope.cancel()


async def test_a_seeder_that_pauses_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    # Three answers, then 25 s of nothing while it is busy elsewhere, then the rest: it was
    # removed as silent at 21 s with its answers on their way.
    seed_ex = MetadataExchange()
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        seed_service = Counting(seed_ex, nursery, delay=0.05, pause_after=1, pause=25.0)
        async with (
            node(nursery, addr(1), [seed_service]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with trio.fail_after(120):
                assert await leech_ex.fetch(leech.manager, IH, timeout=100) == INFO
            assert leech.removed() == []
        nursery.cancel_scope.cancel()


def test_a_peer_asked_one_at_a_time_gets_no_second_request() -> None:
    # rtorrent: libtorrent's tick would send it a second request while its reply is unsent.
    fetcher = paced()
    fetcher.add_peer("rt", len(INFO), one_at_a_time=True)
    assert drain(fetcher, "rt", 0.0) == [0]
    fetcher.handle_timer(1.0)
    assert drain(fetcher, "rt", 1.0) == []  # no tick request
    assert fetcher.next_deadline() == pytest.approx(3.0)  # piece 0 may go elsewhere: no tick
    fetcher.on_data("rt", answer(0), 1.5)
    assert drain(fetcher, "rt", 1.5) == [1]  # one per answer
    fetcher.handle_timer(11.5)  # piece 1 timed out: its slot is free at a tick
    assert drain(fetcher, "rt", 11.5) == [2]
    fetcher.on_data("rt", answer(1), 11.6)  # late: no second request while piece 2 waits
    assert drain(fetcher, "rt", 11.6) == []
    unpaced: MetadataFetcher[str] = MetadataFetcher(IH)
    unpaced.add_peer("rt", len(INFO), one_at_a_time=True)
    assert drain(unpaced, "rt", 0.0) == [0]


@pytest.mark.parametrize("delay", [0.5, 1.5, 5.0])
async def test_rtorrent_is_asked_one_request_at_a_time(
    autojump_clock: trio.testing.MockClock, delay: float
) -> None:
    # An rtorrent whose reply is unsent at a tick (a busy uplink) went deaf: it is known by
    # its client name ("libTorrent 0.13.8", rakshasa's library) and never asked two at once.
    seed_ex = MetadataExchange()
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        rtorrent = RtorrentLike(seed_ex, nursery, delay=delay)
        async with (
            node(nursery, addr(1), [rtorrent], client_version="libTorrent 0.13.8") as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with trio.fail_after(60):
                assert await leech_ex.fetch(leech.manager, IH, timeout=50) == INFO
            assert not rtorrent.deaf
        nursery.cancel_scope.cancel()
