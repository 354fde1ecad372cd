"""BEP 21 partial seeds: the Announcer's regular announces say ``paused`` while the progress
says we are a partial seed, to a client whose ``announce`` takes the keyword (an HTTP
tracker's); ``started``, ``completed`` and ``stopped`` keep their place, and a UDP tracker hears
``none``: BEP 15 has no ``paused``, and no 4 ever goes on its wire (autojump clock)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker._announcer import AnnounceClient, AnnounceProgress, Announcer
from bip_utracker._client import open_tracker_client
from bip_utracker._client_core import AnnounceResult, RequestId
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_request,
    decode_response,
)
from bip_utracker._errors import LocalProtocolError
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import Refusal, ServerConfig
from bip_utracker._swarm import AnnounceAnswer, SwarmStore

HASH = b"\x44" * 20
PEER_ID = PeerId(b"-BP0001-paused000001")
URL = "test://tracker/announce"
INTERVAL = 100


def _answer(count: int) -> AnnounceResult:
    return AnnounceResult(
        request_id=RequestId(count),
        tracker=PeerAddress.parse("127.0.0.1:80"),
        info_hash=HASH,
        interval=INTERVAL,
        leechers=0,
        seeders=0,
        peers=(),
    )


@dataclass
class PausingClient:
    """An AnnounceClient whose announce takes BEP 21's ``paused``: records what it is told."""

    sent: list[tuple[AnnounceEvent, bool]] = field(default_factory=list)

    def check_tracker(self, tracker: str) -> None:
        pass

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: AnnounceEvent,
        num_want: int,
        paused: bool = False,
    ) -> AnnounceResult:
        await trio.lowlevel.checkpoint()
        self.sent.append((event, paused))
        return _answer(len(self.sent))


@dataclass
class OlderClient:
    """An AnnounceClient written before BEP 21's ``paused``: given it, the call would fail."""

    events: list[AnnounceEvent] = field(default_factory=list)

    def check_tracker(self, tracker: str) -> None:
        pass

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: AnnounceEvent,
        num_want: int,
    ) -> AnnounceResult:
        await trio.lowlevel.checkpoint()
        self.events.append(event)
        return _answer(len(self.events))


@dataclass
class Progress:
    """A download the test moves: ``left`` and whether the selection is complete."""

    left: int = 1000
    downloaded: int = 0
    partial_seed: bool = False

    def __call__(self) -> AnnounceProgress:
        return AnnounceProgress(
            downloaded=self.downloaded, left=self.left, partial_seed=self.partial_seed
        )


def announcer(client: AnnounceClient, progress: Progress) -> Announcer:
    return Announcer(
        client, URL, HASH, peer_id=PEER_ID, port=6881, progress=progress, min_interval=60
    )


NONE, STARTED, COMPLETED, STOPPED = (
    AnnounceEvent.NONE,
    AnnounceEvent.STARTED,
    AnnounceEvent.COMPLETED,
    AnnounceEvent.STOPPED,
)


async def test_a_partial_seed_says_paused_in_its_regular_announces(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = PausingClient()
    progress = Progress()
    ann = announcer(client, progress)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)  # started, one regular announce while downloading
        assert not ann.status.last_paused
        progress.partial_seed, progress.left, progress.downloaded = True, 600, 400
        await trio.sleep(2 * INTERVAL)  # two regular announces as a partial seed
        status = ann.status
        progress.partial_seed = False  # a selection grown: downloading again
        await trio.sleep(INTERVAL)
        nursery.cancel_scope.cancel()
    assert client.sent == [
        (STARTED, False),
        (NONE, False),
        (NONE, True),
        (NONE, True),
        (NONE, False),
        (STOPPED, False),  # leaving is said as it is, and clears the status's paused
    ]
    assert status.last_event is NONE
    assert status.last_paused
    assert not ann.status.last_paused


async def test_started_and_completed_keep_their_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = PausingClient()
    progress = Progress(left=600, partial_seed=True)  # a partial seed from the start
    ann = announcer(client, progress)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)
        ann.mark_completed()  # the caller's word: completed goes now, not paused
        await trio.sleep(INTERVAL + 10)
        nursery.cancel_scope.cancel()
    assert client.sent == [
        (STARTED, False),
        (NONE, True),
        (COMPLETED, False),
        (NONE, True),
        (STOPPED, False),
    ]


async def test_a_seed_is_no_partial_seed(autojump_clock: trio.testing.MockClock) -> None:
    client = PausingClient()
    ann = announcer(client, Progress(left=0, partial_seed=True))  # left 0 wins
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)
        nursery.cancel_scope.cancel()
    assert client.sent == [(STARTED, False), (NONE, False), (STOPPED, False)]


async def test_a_client_without_the_keyword_is_never_given_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = OlderClient()
    ann = announcer(client, Progress(left=600, partial_seed=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)
        status = ann.status
        nursery.cancel_scope.cancel()
    assert client.events == [STARTED, NONE, STOPPED]
    assert status.failures == 0
    assert not status.last_paused


@dataclass
class Recorder:
    """A UDP tracker handler: the built-in store, recording each announce's event."""

    store: SwarmStore = field(default_factory=SwarmStore)
    events: list[AnnounceEvent] = field(default_factory=list)

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        self.events.append(request.event)
        return self.store.announce(request, peer, num_want, now)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats]:
        return self.store.scrape(info_hashes, now)


async def test_a_udp_tracker_hears_none(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    config = ServerConfig(interval=INTERVAL, rate_limit=None)
    async with (
        serve_tracker(("127.0.0.1", 0), config=config, handler=recorder) as server,
        open_tracker_client(bind_v6=None) as client,
    ):
        host, port = server.address[:2]
        progress = Progress(left=600, partial_seed=True)
        ann = Announcer(
            client,
            f"udp://{host}:{port}/announce",
            HASH,
            peer_id=PEER_ID,
            port=6881,
            progress=progress,
            min_interval=60,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(2 * INTERVAL + 50)
            status = ann.status
            nursery.cancel_scope.cancel()
        # The server drops an announce whose event is not 0..3 as malformed: none was.
        assert server.statistics().malformed == 0
    assert recorder.events == [STARTED, NONE, NONE, STOPPED]
    assert status.announces == 3
    assert not status.last_paused


def test_the_codec_puts_no_other_event_on_the_wire() -> None:
    request = AnnounceRequest(1, 2, HASH, bytes(PEER_ID), 0, 5, 0, NONE, 0, 7, -1, 6881)
    assert decode_request(request.encode()) == request
    for bad in (4, -1, True, "none"):
        with pytest.raises(LocalProtocolError, match="announce event"):
            AnnounceRequest(1, 2, HASH, bytes(PEER_ID), 0, 5, 0, bad, 0, 7, -1, 6881).encode()  # type: ignore[arg-type]


def test_a_udp_scrape_has_no_downloaders() -> None:
    response = ScrapeResponse(9, (ScrapeStats(1, 2, 3, downloaders=1),))
    # BEP 15's 12 bytes per swarm have no room for it: left out, and read back as None.
    decoded = decode_response(response.encode())
    assert isinstance(decoded, ScrapeResponse)
    assert decoded.files == (ScrapeStats(1, 2, 3),)
    assert decoded.files[0].downloaders is None
