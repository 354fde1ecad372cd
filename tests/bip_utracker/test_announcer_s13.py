"""An :class:`~bip_utracker.Announcer` may be given no overall bound on one announce
(``timeout=None``): for a client that bounds each request itself (bip's HTTP tracker client,
whose wait for a slot of its own must not count), a long wait is no failure."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker import AnnounceEvent, AnnounceProgress, Announcer, AnnounceResult
from bip_utracker._client_core import RequestId
from bip_utracker._errors import LocalProtocolError

HASH = b"\x33" * 20
PEER_ID = PeerId(b"-BP0001-announcer013")
URL = "http://tracker.invalid/announce"
A_WEEK = 7 * 24 * 3600.0


class SlowClient:
    """An AnnounceClient that answers each announce after ``delay`` seconds (trio's clock)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.events: list[AnnounceEvent] = []

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
        await trio.sleep(self.delay)
        self.events.append(event)
        return AnnounceResult(
            request_id=RequestId(len(self.events)),
            tracker=PeerAddress(IPv4Address("127.0.0.1"), 80),
            info_hash=HASH,
            interval=1800,
            leechers=0,
            seeders=0,
            peers=(),
        )


def _announcer(client: SlowClient, timeout: float | None) -> Announcer:
    return Announcer(
        client,
        URL,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=0),
        timeout=timeout,
        stopped_timeout=0.0,
    )


async def test_no_timeout_waits_for_the_answer_however_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Longer than the week bip's discovery passed before, to show there is no bound at all.
    client = SlowClient(delay=2 * A_WEEK)
    announcer = _announcer(client, None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        await trio.sleep(2 * A_WEEK + 1)
        status = announcer.status
        nursery.cancel_scope.cancel()
    assert client.events == [AnnounceEvent.STARTED]
    assert status.announces == 1
    assert status.failures == 0
    assert status.last_error is None


async def test_a_finite_timeout_still_fails_a_slow_announce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = SlowClient(delay=120.0)
    announcer = _announcer(client, 60.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run)
        await trio.sleep(61.0)
        status = announcer.status
        nursery.cancel_scope.cancel()
    assert status.failures == 1
    assert "60" in str(status.last_error)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "60"])
def test_a_bad_timeout_is_still_refused(bad: object) -> None:
    with pytest.raises(LocalProtocolError, match="timeout"):
        _announcer(SlowClient(delay=0.0), bad)  # type: ignore[arg-type]
