"""When the Announcer tries a failed tracker again: BEP 31's ``retry in`` (minutes, or
``never``), a refusal's ``interval``, and the backoff otherwise (autojump clock, a scripted
client); and which tracker URL path segments are hidden as passkeys."""

from __future__ import annotations

import base64
import itertools
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from tests._announce_fakes import RecordingClient, scripted

from bip_handshake import PeerAddress, PeerId
from bip_utracker._announcer import (
    DEFAULT_MAX_ANNOUNCE_INTERVAL,
    DEFAULT_RETRY_DELAY,
    MAX_RETRY_IN,
    AnnounceClient,
    AnnounceProgress,
    Announcer,
    AnnouncerStatus,
)
from bip_utracker._client_core import AnnounceResult, RequestId
from bip_utracker._codec import AnnounceEvent
from bip_utracker._errors import TrackerRejectedError
from bip_utracker._url import is_secret_segment, shown_url

HASH = b"\x31" * 20
PEER_ID = PeerId(b"-BP0001-retryin00001")
URL = "http://tracker.example/announce"
TRACKER = PeerAddress.parse("127.0.0.9:80")


class RefusalError(TrackerRejectedError):
    """A refusal that may say when to come back, as bip's HTTP client's do."""

    def __init__(self, message: str, *, retry_in: object = None, interval: object = None) -> None:
        super().__init__(message)
        self.retry_in = retry_in
        self.interval = interval


def answered(interval: int = 1800) -> AnnounceResult:
    return AnnounceResult(RequestId(1), TRACKER, HASH, interval, 0, 0, ())


def announcer(client: RecordingClient, **kwargs: object) -> Announcer:
    assert isinstance(client, AnnounceClient)
    # The scripted answers ask for a minute or two: below the default floor (5 minutes).
    kwargs.setdefault("min_interval", 30)
    return Announcer(
        client,
        URL,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=10),
        **kwargs,  # type: ignore[arg-type]
    )


async def run_for(ann: Announcer, seconds: float, then: Callable[[], None] | None = None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(seconds)
        if then is not None:
            then()
        nursery.cancel_scope.cancel()


def gaps(times: list[float]) -> list[float]:
    return [after - before for before, after in itertools.pairwise(times)]


# -- retry in: minutes ---------------------------------------------------------------------------


async def test_retry_in_five_minutes_waits_300_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(scripted(RefusalError("overloaded", retry_in=5), answered(1800)))
    ann = announcer(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(1)
        status = ann.status
        assert (status.failures, status.next_announce, status.given_up) == (1, 300.0, None)
        assert isinstance(status.last_error, RefusalError)
        await trio.sleep(400)
        nursery.cancel_scope.cancel()
    assert client.times()[:2] == [0.0, 300.0]
    assert client.events() == [AnnounceEvent.STARTED, AnnounceEvent.STARTED, AnnounceEvent.STOPPED]


@pytest.mark.parametrize(
    ("minutes", "wait"),
    [
        (0, DEFAULT_RETRY_DELAY),  # "now" is not sooner than our first retry
        (1, 60.0),
        (45, 2700.0),  # longer than max_interval: the tracker said so
        (60 * 24 * 7, MAX_RETRY_IN),  # a week: asked again after the cap, one request
        (2**32 - 1, MAX_RETRY_IN),
    ],
)
async def test_retry_in_is_bounded(
    autojump_clock: trio.testing.MockClock, minutes: int, wait: float
) -> None:
    client = RecordingClient(scripted(RefusalError("busy", retry_in=minutes), answered()))
    await run_for(announcer(client), wait + 1)
    assert gaps(client.times())[0] == wait


async def test_a_longer_max_interval_lifts_the_cap(autojump_clock: trio.testing.MockClock) -> None:
    client = RecordingClient(scripted(RefusalError("busy", retry_in=600), answered()))
    await run_for(announcer(client, max_interval=7200.0), 7201)
    assert gaps(client.times())[0] == 7200.0


async def test_retry_in_holds_against_announce_now_and_completed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(
        scripted(answered(100), RefusalError("busy", retry_in=10), answered(100))
    )
    ann = announcer(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(150)  # started at 0, refused at 100: next at 700
        assert ann.status.next_announce == 700.0
        ann.announce_now()
        ann.mark_completed()
        await trio.sleep(500)
        assert client.times() == [0.0, 100.0]
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert (client.times()[2], client.events()[2]) == (700.0, AnnounceEvent.COMPLETED)


async def test_retry_in_then_a_plain_failure_backs_off_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(scripted(RefusalError("busy", retry_in=2), RefusalError("down")))
    await run_for(announcer(client), 120 + 15 + 30 + 1)
    # the failures in a row go on counting: the plain one after the hold is the second
    assert client.times() == [0.0, 120.0, 150.0]


# -- retry in: never -----------------------------------------------------------------------------


async def test_never_stops_announcing_and_sends_no_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    updates: list[AnnouncerStatus] = []
    client = RecordingClient(
        scripted(answered(60), RefusalError("not a tracker", retry_in="never"))
    )
    ann = announcer(client, on_update=updates.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(36_000)
        status = ann.status
        ann.announce_now()
        ann.mark_completed()
        await trio.sleep(3600)
        nursery.cancel_scope.cancel()
    assert client.times() == [0.0, 60.0]  # nothing after the refusal, not even "stopped"
    assert status.given_up == "not a tracker"
    assert status.running
    assert status.next_announce is None
    assert not status.announcing
    assert updates[-1].given_up == "not a tracker"
    assert not ann.status.running
    # A new run of the same announcer sends nothing either: the refusal was for good.
    await run_for(ann, 3600)
    assert len(client.sent) == 2
    assert ann.status.given_up == "not a tracker"


async def test_never_at_the_first_announce(autojump_clock: trio.testing.MockClock) -> None:
    client = RecordingClient(scripted(RefusalError("gone", retry_in="never")))
    await run_for(announcer(client), 100)
    assert client.events() == [AnnounceEvent.STARTED]


# -- no retry in: the backoff --------------------------------------------------------------------


async def test_a_plain_failure_backs_off_as_documented(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(scripted(RefusalError("down")))
    await run_for(announcer(client), 6000)
    # 15 s doubled per failure in a row, capped at max_interval (1800 s)
    expected = [15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0]
    assert gaps(client.times())[: len(expected)] == expected
    assert DEFAULT_RETRY_DELAY == 15.0
    assert DEFAULT_MAX_ANNOUNCE_INTERVAL == 1800.0


@pytest.mark.parametrize("bogus", [True, -1, "5", b"never", "Never", 1.5, None, [5]])
async def test_anything_else_in_retry_in_is_a_plain_failure(
    autojump_clock: trio.testing.MockClock, bogus: object
) -> None:
    client = RecordingClient(scripted(RefusalError("down", retry_in=bogus)))
    await run_for(announcer(client), 50)
    assert client.times() == [0.0, 15.0, 45.0]


async def test_a_refusals_interval_is_waited_for(autojump_clock: trio.testing.MockClock) -> None:
    client = RecordingClient(
        scripted(RefusalError("unregistered", interval=600), RefusalError("x", interval=99_999))
    )
    await run_for(announcer(client), 3000)
    # at least the interval asked, capped like a regular interval (max_interval)
    assert gaps(client.times())[:2] == [600.0, 1800.0]


async def test_retry_in_wins_over_the_refusals_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = RecordingClient(scripted(RefusalError("busy", retry_in=1, interval=900), answered()))
    await run_for(announcer(client), 100)
    assert client.times()[:2] == [0.0, 60.0]


# -- passkeys in tracker URLs --------------------------------------------------------------------

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B62 = string.ascii_letters + string.digits

# Keys with a digit (and hex): the class the rule always catches, 16 to 40 characters.
hex_keys = st.text(alphabet="0123456789abcdef", min_size=16, max_size=40)
keys_with_digits = st.tuples(
    st.sampled_from([_B32, _B32.lower(), _B62, string.ascii_lowercase + string.digits]),
    st.integers(16, 40),
    st.randoms(use_true_random=False),
).map(
    lambda parts: (
        "".join(parts[2].choice(parts[0]) for _ in range(parts[1] - 1)) + parts[2].choice("234567")
    )
)
# Where private trackers put them.
TEMPLATES = ["/announce/{key}", "/{key}/announce", "/announce.php?passkey={key}", "/a/{key}"]


@given(key=st.one_of(hex_keys, keys_with_digits), template=st.sampled_from(TEMPLATES))
def test_keys_are_hidden_wherever_they_sit(key: str, template: str) -> None:
    shown = shown_url("https://tracker.example" + template.format(key=key))
    assert key not in shown
    assert shown.startswith("https://tracker.example/")


@pytest.mark.parametrize(
    ("alphabet", "most"),
    [
        (_B32, 0.015),  # upper case, no digit: missed before, every one
        (_B32.lower(), 0.015),
        (_B62, 0.015),  # mixed case, no digit: missed before, 45% at 16 letters
        (_B62 + "-_", 0.015),  # base64url without a digit: missed before, 57% at 16
    ],
)
@pytest.mark.parametrize("size", [16, 20, 32, 40])
def test_letter_keys_without_digits_are_hidden(alphabet: str, most: float, size: int) -> None:
    rng = random.Random(f"{alphabet}{size}")
    letters = "".join(char for char in alphabet if not char.isdigit())
    keys = ["".join(rng.choice(letters) for _ in range(size)) for _ in range(2000)]
    missed = [key for key in keys if not is_secret_segment(key)]
    assert len(missed) <= most * len(keys), missed[:5]


def test_real_base32_passkeys_are_hidden() -> None:
    rng = random.Random(31)
    for size in (10, 15, 20, 25):  # 16 to 40 characters
        for _ in range(500):
            key = base64.b32encode(rng.randbytes(size)).decode().rstrip("=")
            assert is_secret_segment(key), key
            assert is_secret_segment(key.lower()), key


@pytest.mark.parametrize(
    "word",
    [
        "announce",
        "a",
        "tracker",
        "scrape",
        "api",
        "v1",
        "announce.php",
        "internationalization",
        "counterrevolutionaries",
        "electroencephalography",
        "supercalifragilisticexpialidocious",
        "ANNOUNCEMENTSPAGE",
        "BitTorrentTrackerAnnounce",
        "HTTPTrackerAnnounceURL",
        "XMLHttpRequestHandler",
        "MicrosoftVisualStudioCode",
        "private_tracker_announce_url",
        "Big_Buck_Bunny_1080p_surround_FrostWire",
        "TheMatrixReloaded_BluRay",
        "Fedora-Workstation-Live-x86_64-40-1.14.iso",
        "ApacheOpenOffice_4.1.15_Linux_x86-64_install-deb_en-US",
    ],
)
def test_ordinary_path_words_stay_readable(word: str) -> None:
    assert not is_secret_segment(word)
    assert shown_url(f"https://t.example/{word}/announce") == f"https://t.example/{word}/announce"


# -- min interval: what announce_now() waits for -------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpLikeResult(AnnounceResult):
    """An answer with a ``min interval``, as bip's HTTP client's are."""

    min_interval: int | None = None


async def test_announce_now_waits_for_the_trackers_min_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with_min = HttpLikeResult(RequestId(1), TRACKER, HASH, 1800, 0, 0, (), min_interval=300)
    client = RecordingClient(scripted(with_min, answered(1800)))
    ann = announcer(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(10)
        ann.announce_now()  # the tracker asked for 300 s at least: not before then
        await trio.sleep(400)
        ann.announce_now()  # the last answer gave no min interval: ours (30 s)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert client.times()[:3] == [0.0, 300.0, 410.0]
