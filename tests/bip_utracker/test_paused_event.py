"""BEP 21 partial seeds: the Announcer's regular announces say ``paused`` while the progress
says we are a partial seed, to a client that opted in (``announces_paused``, an HTTP tracker's);
``started``, ``completed`` and ``stopped`` keep their place, a tracker refusing ``paused`` hears
``none`` from then on (at once), a bad progress is the caller's error, and a UDP tracker hears
``none``: BEP 15 has no ``paused``, and no 4 ever goes on its wire (autojump clock)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from tests._announce_fakes import Answer, RecordingClient, RecordingHandler, Sent

from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker._announcer import (
    AnnounceClient,
    AnnounceProgress,
    Announcer,
    AnnouncerStatus,
)
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
from bip_utracker._errors import (
    LocalProtocolError,
    TrackerError,
    TrackerRejectedError,
    TrackerTimeoutError,
)
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import ServerConfig

HASH = b"\x44" * 20
PEER_ID = PeerId(b"-BP0001-paused000001")
URL = "test://tracker/announce"
INTERVAL = 100


def _answer(sent: Sent) -> AnnounceResult:
    return AnnounceResult(
        request_id=RequestId(sent.number),
        tracker=PeerAddress.parse("127.0.0.1:80"),
        info_hash=HASH,
        interval=INTERVAL,
        leechers=0,
        seeders=0,
        peers=(),
    )


class PausingClient(RecordingClient):
    """An AnnounceClient that opted in to BEP 21's ``paused``: records what it is told. A plain
    :class:`RecordingClient` has not: it stands for a client written before ``paused`` (given
    the keyword, its call would fail), and records whether it was given it all the same."""

    announces_paused: ClassVar[bool] = True

    def __init__(self, answer: Answer = _answer) -> None:
        super().__init__(answer)


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


def announcer(client: AnnounceClient, progress: Progress, **options: Any) -> Announcer:
    return Announcer(
        client, URL, HASH, peer_id=PEER_ID, port=6881, progress=progress, min_interval=60, **options
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
    assert client.said() == [  # None: no paused keyword passed
        (STARTED, None),
        (NONE, None),
        (NONE, True),
        (NONE, True),
        (NONE, None),
        (STOPPED, None),  # leaving is said as it is, and clears the status's paused
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
    assert client.said() == [
        (STARTED, None),
        (NONE, True),
        (COMPLETED, None),
        (NONE, True),
        (STOPPED, None),
    ]


async def test_a_seed_is_no_partial_seed(autojump_clock: trio.testing.MockClock) -> None:
    client = PausingClient()
    ann = announcer(client, Progress(left=0, partial_seed=True))  # left 0 wins
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)
        nursery.cancel_scope.cancel()
    assert client.said() == [(STARTED, None), (NONE, None), (STOPPED, None)]


async def test_a_client_without_the_keyword_is_never_given_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(_answer)  # opted in to nothing
    ann = announcer(client, Progress(left=600, partial_seed=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)
        status = ann.status
        nursery.cancel_scope.cancel()
    assert client.said() == [(STARTED, None), (NONE, None), (STOPPED, None)]
    assert status.failures == 0
    assert not status.last_paused


async def test_a_udp_tracker_hears_none(autojump_clock: trio.testing.MockClock) -> None:
    recorder = RecordingHandler()
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
    assert [request.event for request in recorder.requests] == [STARTED, NONE, NONE, STOPPED]
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


# -- the opt-in ----------------------------------------------------------------------------------


class Forwarding:
    """A wrapper (a rate limiter, a logger) around a client, forwarding ``**kwargs``: its
    signature names no ``paused``, only its attribute says whether it passes it on."""

    def __init__(self, inner: PausingClient, *, opts_in: object = None) -> None:
        self.inner = inner
        if opts_in is not None:
            self.announces_paused = opts_in

    def check_tracker(self, tracker: str) -> None:
        self.inner.check_tracker(tracker)

    async def announce(
        self, tracker: str, info_hash: InfoHash | bytes, **kwargs: Any
    ) -> AnnounceResult:
        return await self.inner.announce(tracker, info_hash, **kwargs)


class UnrelatedPaused(RecordingClient):
    """A client whose ``paused`` means something else (a paused torrent), never opted in."""

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        paused: bool | None = None,
        **kwargs: Any,
    ) -> AnnounceResult:
        assert not paused, "told paused without opting in"
        return await super().announce(tracker, info_hash, **kwargs)


async def sent_by(client: Any) -> None:
    """Run ``client`` as a partial seed's announcer: started, one regular announce, stopped."""
    ann = announcer(client, Progress(left=600, partial_seed=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 50)
        nursery.cancel_scope.cancel()


async def test_a_kwargs_wrapper_that_opts_in_gets_paused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = PausingClient()
    await sent_by(Forwarding(inner, opts_in=True))
    assert inner.said() == [(STARTED, None), (NONE, True), (STOPPED, None)]


@pytest.mark.parametrize("opts_in", [None, False, 1, "yes"])
async def test_no_client_is_told_paused_without_opting_in(
    opts_in: object, autojump_clock: trio.testing.MockClock
) -> None:
    # Only True itself opts in: not a truthy stand-in (a mock's attribute is one).
    inner = PausingClient()
    await sent_by(Forwarding(inner, opts_in=opts_in))
    assert inner.said() == [(STARTED, None), (NONE, None), (STOPPED, None)]
    unrelated = UnrelatedPaused(_answer)
    await sent_by(unrelated)
    assert unrelated.events() == [STARTED, NONE, STOPPED]


# -- a tracker that refuses paused ----------------------------------------------------------------


def refusing_paused(error: TrackerError) -> Answer:
    """A tracker that knows no ``paused`` (chihaya, bittorrent-tracker): refuses each announce
    saying it with ``error``."""

    def answer(sent: Sent) -> AnnounceResult:
        if sent.paused:
            raise error
        return _answer(sent)

    return answer


def refused(message: str, **attributes: object) -> TrackerRejectedError:
    error = TrackerRejectedError(message)
    for name, value in attributes.items():
        setattr(error, name, value)
    return error


@pytest.mark.parametrize(
    "error",
    [
        refused("failed to provide valid client event"),
        # Whatever the refusal says of when to come back: what it refused may be the event.
        refused("invalid event", retry_in=30, interval=900),
        refused("invalid event", retry_in="never"),
    ],
)
async def test_a_tracker_refusing_paused_hears_none_at_once(
    error: TrackerRejectedError,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = PausingClient(refusing_paused(error))
    updates: list[AnnouncerStatus] = []
    ann = announcer(client, Progress(left=600, partial_seed=True), on_update=updates.append)
    caplog.set_level(logging.DEBUG, "bip_utracker.client")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(3 * INTERVAL + 50)
        status = ann.status
        nursery.cancel_scope.cancel()
    assert client.said() == [
        (STARTED, None),
        (NONE, True),  # refused
        (NONE, None),  # at once: no backoff, no min_interval, no retry in
        (NONE, None),
        (NONE, None),
        (STOPPED, None),
    ]
    started, refused_at, retried, *_ = client.times()
    assert refused_at - started == INTERVAL
    assert retried == refused_at
    assert status.failures == 0  # the tracker keeps us
    assert status.given_up is None
    assert status.announces == 4
    assert not status.last_paused
    # The refusal we handle is no failure: never counted, never the last error, nobody told
    # (bip's discovery logs an update with an error as "announce failed" at INFO).
    assert [u.failures for u in updates] == [0] * 5  # the four answers, and stopped's
    assert all(u.last_error is None for u in updates)
    [record] = [r for r in caplog.records if "saying none to it from now on" in r.getMessage()]
    assert record.levelno == logging.DEBUG


async def test_paused_is_given_up_once_only(autojump_clock: trio.testing.MockClock) -> None:
    """The retry with none refused too: an ordinary failure (the first: the refusal of paused
    is none), its backoff waited out."""

    paused_refused = refusing_paused(TrackerRejectedError("failed to provide valid client event"))

    def refusing_all(sent: Sent) -> AnnounceResult:
        if sent.event is NONE and not sent.paused:
            raise TrackerRejectedError("unregistered torrent")
        return paused_refused(sent)

    client = PausingClient(refusing_all)
    ann = announcer(client, Progress(left=600, partial_seed=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 40)
        status = ann.status
        nursery.cancel_scope.cancel()
    assert client.said()[1:4] == [(NONE, True), (NONE, None), (NONE, None)]
    refused_at, retried, backed_off = client.times()[1:4]
    assert retried == refused_at
    assert backed_off - retried == 15  # retry_delay 15: the first failure in a row
    assert status.failures == 2  # the refusals of the retry and of the next one
    assert isinstance(status.last_error, TrackerRejectedError)
    assert str(status.last_error) == "unregistered torrent"


async def test_a_timeout_saying_paused_keeps_paused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No answer proves nothing of the event: the retry, after the backoff, says paused."""
    client = PausingClient(refusing_paused(TrackerTimeoutError("no answer")))
    ann = announcer(client, Progress(left=600, partial_seed=True))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(INTERVAL + 20)
        nursery.cancel_scope.cancel()
    assert client.said() == [(STARTED, None), (NONE, True), (NONE, True), (STOPPED, None)]
    assert client.times()[2] - client.times()[1] == 15  # retry_delay


# -- the caller's progress ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "message"),
    [
        (AnnounceProgress(left="600", partial_seed=True), "left is an int"),  # type: ignore[arg-type]
        (AnnounceProgress(left=-1, partial_seed=True), "left is an int"),
        (AnnounceProgress(left=0, downloaded=None), "downloaded is an int"),  # type: ignore[arg-type]
        (AnnounceProgress(left=600, partial_seed=1), "partial_seed is a bool"),  # type: ignore[arg-type]
        ((0, 0, 600), "gives an AnnounceProgress"),
    ],
)
async def test_a_bad_progress_is_the_callers_error(
    progress: object, message: str, autojump_clock: trio.testing.MockClock
) -> None:
    client = PausingClient()
    ann = Announcer(
        client,
        URL,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: progress,  # type: ignore[arg-type,return-value]
    )
    with trio.fail_after(INTERVAL), pytest.raises(LocalProtocolError, match=message):
        await ann.run()
    assert client.sent == []
    assert not ann.status.running
