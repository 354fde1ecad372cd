"""BEP 31's ``retry in`` only ever lengthens the wait after a refusal: a tracker answering
``retry in: 0`` (or a minute) to every announce is backed off from as any failing tracker is,
not asked every ``retry_delay`` seconds for ever (autojump clock, a scripted client)."""

from __future__ import annotations

import itertools

import trio
import trio.testing
from tests._announce_fakes import RecordingClient, refusing, scripted

from bip_handshake import PeerAddress, PeerId
from bip_utracker._announcer import AnnounceClient, AnnounceProgress, Announcer
from bip_utracker._client_core import AnnounceResult, RequestId
from bip_utracker._errors import TrackerRejectedError

HASH = b"\x32" * 20
PEER_ID = PeerId(b"-BP0001-retryin00002")
URL = "http://tracker.example/announce"
TRACKER = PeerAddress.parse("127.0.0.9:80")
# The plain backoff (no retry in): 15 s doubled per failure in a row, capped at 1800 s.
BACKOFF = [15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]


class RefusalError(TrackerRejectedError):
    """A refusal saying when to come back, as bip's HTTP client's do."""

    def __init__(self, message: str, *, retry_in: object = None) -> None:
        super().__init__(message)
        self.retry_in = retry_in


def announcer(client: RecordingClient) -> Announcer:
    assert isinstance(client, AnnounceClient)
    return Announcer(
        client,
        URL,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=10),
        stopped_timeout=0,
    )


async def run_for(ann: Announcer, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await ann.run()


def gaps(client: RecordingClient) -> list[float]:
    return [after - before for before, after in itertools.pairwise(client.times())]


async def test_retry_in_zero_backs_off_as_a_plain_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(refusing(RefusalError("busy", retry_in=0)))
    await run_for(announcer(client), 6000)
    assert gaps(client)[: len(BACKOFF)] == BACKOFF
    # in an hour (to 3705 s): 8 announces, as with no retry in; not 241
    assert sum(time <= 3600 for time in client.times()) == 8


async def test_retry_in_lengthens_the_backoff_never_shortens_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(refusing(RefusalError("busy", retry_in=1)))
    await run_for(announcer(client), 6000)
    # a minute while the backoff is shorter, then the backoff
    assert gaps(client)[:8] == [60.0, 60.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0]


async def test_a_retry_in_after_failures_waits_out_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(
        scripted(*[RefusalError("down")] * 4, RefusalError("busy", retry_in=2), RefusalError("x"))
    )
    await run_for(announcer(client), 2000)
    # 15, 30, 60, 120 s; the fifth failure in a row backs off 240 s, more than its 120 s;
    # the sixth, 480
    assert gaps(client)[:6] == [15.0, 30.0, 60.0, 120.0, 240.0, 480.0]


async def test_only_the_trackers_wait_holds_against_announce_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answered = AnnounceResult(RequestId(1), TRACKER, HASH, 1800, 0, 0, ())
    client = RecordingClient(
        scripted(
            *[RefusalError("down")] * 3,
            RefusalError("busy", retry_in=0),
            RefusalError("busy", retry_in=2),
            answered,
        )
    )
    ann = announcer(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(106)  # failed at 0, 15, 45, 105 (retry in 0): backoff 120 s
        assert ann.status.next_announce == 225.0
        ann.announce_now()  # our backoff gives way, as after any failure: 30 s on
        await trio.sleep(30)
        assert client.times()[-1] == 135.0  # refused, retry in 2: max(120, backoff 240)
        assert ann.status.next_announce == 375.0
        ann.announce_now()  # the tracker's 120 s hold; then the backoff gives way
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    assert client.times() == [0.0, 15.0, 45.0, 105.0, 135.0, 255.0]


# A ``retry in`` too large for a float (an int of minutes from a third-party AnnounceClient)
# is capped before it is converted: the announcer waits out the cap, not an OverflowError.


async def test_a_retry_in_too_large_for_a_float_waits_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(refusing(RefusalError("busy", retry_in=10**400)))
    ann = announcer(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(5000)
        # the hold is capped at MAX_RETRY_IN (an hour: max_interval is 30 minutes)
        assert client.times() == [0.0, 3600.0]
        assert ann.status.next_announce == 7200.0
        nursery.cancel_scope.cancel()
