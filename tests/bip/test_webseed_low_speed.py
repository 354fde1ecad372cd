"""The web seed client's low-speed rule (curl's CURLOPT_LOW_SPEED_LIMIT/_TIME) in place of a
deadline for the whole fetch: a slow honest server finishes, a trickling one is cut, and what
comes before the data (redirects, heads) keeps a deadline of its own. Virtual time only."""

from __future__ import annotations

import math
import re

import pytest
import trio
import trio.testing
from _hostile_http_server import Script, ScriptedServer, response, scripted_server
from hypothesis import given
from hypothesis import strategies as st

from bip._client._http_rules import LowSpeed
from bip._client._http_tracker_codec import parse_http_tracker_url
from bip._client._webseed_http import (
    DEFAULT_WEB_SEED_LOW_SPEED_LIMIT,
    DEFAULT_WEB_SEED_LOW_SPEED_TIME,
    DEFAULT_WEB_SEED_REQUEST_TIMEOUT,
    WebSeedClient,
    WebSeedError,
)

MIB = 1024 * 1024
DATA = bytes(range(256)) * 4096  # 1 MiB of known bytes
_RANGE = re.compile(rb"\r\nRange: bytes=([0-9]+)-([0-9]+)\r\n")


def head_for(request: bytes) -> tuple[bytes, bytes]:
    """The head of an honest 206 answer to ``request`` (from DATA), and the bytes it promises."""
    match = _RANGE.search(request)
    assert match is not None
    first, last = int(match.group(1)), int(match.group(2))
    body = DATA[first : last + 1]
    range_header = f"Content-Range: bytes {first}-{last}/{len(DATA)}"
    head = response(
        "206 Partial Content", b"", range_header, f"Content-Length: {len(body)}", length=False
    )
    return head, body


def paced(chunk: int, delay: float) -> Script:
    """A server sending the range ``chunk`` bytes at a time, ``delay`` seconds apart."""

    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        head, body = head_for(request)
        await stream.send_all(head)
        for start in range(0, len(body), chunk):
            await trio.sleep(delay)
            await stream.send_all(body[start : start + chunk])

    return script


async def fetch(server: ScriptedServer, length: int, **options: object) -> bytes:
    client = WebSeedClient(**options)  # type: ignore[arg-type]
    return await client.fetch(parse_http_tracker_url(server.url), 0, length)


async def test_a_slow_honest_server_completes_a_whole_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 4 KiB/s: 1 MiB takes 256 s, twice what the old whole-fetch deadline (120 s) allowed.
    with trio.fail_after(10_000):
        async with scripted_server(paced(4096, 1.0), path="/f.bin") as server:
            start = trio.current_time()
            assert await fetch(server, MIB) == DATA
            assert trio.current_time() - start >= 256


async def test_a_bursty_server_averaging_enough_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 48 KiB, then 19 s of nothing (just within the silence timeout): 2.5 KiB/s on average.
    with trio.fail_after(10_000):
        async with scripted_server(paced(48 * 1024, 19.0), path="/f.bin") as server:
            assert await fetch(server, 256 * 1024) == DATA[: 256 * 1024]


async def test_a_trickle_is_cut_after_the_low_speed_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 512 bytes/s: never silent, but half the default limit.
    with trio.fail_after(10_000):
        async with scripted_server(paced(512, 1.0), path="/f.bin") as server:
            start = trio.current_time()
            with pytest.raises(WebSeedError, match="slower than 1024 bytes/s over 30 s"):
                await fetch(server, MIB)
            assert 30 <= trio.current_time() - start <= 31


async def test_the_limit_and_time_are_the_callers(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10_000):
        async with scripted_server(paced(512, 1.0), path="/f.bin") as server:
            start = trio.current_time()
            with pytest.raises(WebSeedError, match="slower than 600 bytes/s over 10 s"):
                await fetch(server, MIB, low_speed_limit=600, low_speed_time=10.0)
            assert 10 <= trio.current_time() - start <= 11
            # 0: no limit but the silence timeout.
            data = await fetch(server, 20_000, low_speed_limit=0)
            assert data == DATA[:20_000]


async def test_redirects_and_heads_keep_a_deadline(autojump_clock: trio.testing.MockClock) -> None:
    # Each hop answers its redirect after 15 s: neither silent 20 s nor slow over 30 s (each
    # is a connection of its own), but the data's head is still not in after 60 s.
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await trio.sleep(15.0)
        await stream.send_all(response("302 Found", b"", f"Location: /hop{index + 1}"))

    with trio.fail_after(10_000):
        async with scripted_server(script, path="/f.bin") as server:
            start = trio.current_time()
            with pytest.raises(WebSeedError, match="no answer's head within 60 s"):
                await fetch(server, 1000)
            assert trio.current_time() - start == pytest.approx(60, abs=0.5)
            with pytest.raises(WebSeedError, match="no answer's head within 20 s"):
                await fetch(server, 1000, request_timeout=20.0)


def test_defaults_let_a_kib_a_second_through() -> None:
    assert DEFAULT_WEB_SEED_LOW_SPEED_LIMIT == 1024
    assert DEFAULT_WEB_SEED_LOW_SPEED_TIME == 30.0
    assert DEFAULT_WEB_SEED_REQUEST_TIMEOUT == 60.0


@pytest.mark.parametrize(
    "options",
    [
        {"low_speed_limit": -1},
        {"low_speed_limit": 1.5},
        {"low_speed_limit": True},
        {"low_speed_time": 0},
        {"low_speed_time": float("nan")},
        {"low_speed_time": "30"},
    ],
)
def test_bad_low_speed_options(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        WebSeedClient(**options)  # type: ignore[arg-type]


# -- the pure rule -----------------------------------------------------------------------------


def test_low_speed_rule() -> None:
    rule = LowSpeed(100, 10.0, now=0.0)
    assert rule.deadline() == 10.0  # nothing yet: too slow once the period has passed
    rule.received(999, 1.0)
    assert rule.too_slow(10.0)  # 999 < 100 * 10
    rule.received(1, 2.0)
    assert not rule.too_slow(10.0)
    assert rule.too_slow(12.0)  # the slice of t=1 left the window
    assert LowSpeed(0, 10.0, now=0.0).deadline() == math.inf


arrivals = st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.integers(0, 5000)), max_size=200)


@given(arrivals, st.integers(1, 2000), st.floats(0.5, 60, allow_nan=False))
def test_low_speed_matches_its_definition_to_a_slice(
    steps: list[tuple[float, int]], limit: int, period: float
) -> None:
    # Too slow only when fewer than limit * period bytes came in the last period (no false
    # alarm), and never later than that, give or take one slice; memory stays bounded.
    rule = LowSpeed(limit, period, now=0.0)
    width = period / 32
    now = 0.0
    history: list[tuple[float, int]] = []
    for gap, size in steps:
        now += gap
        rule.received(size, now)
        history.append((now, size))
        assert len(rule._buckets) <= 34
        needed = limit * period
        exact = sum(n for t, n in history if t > now - period)
        lenient = sum(n for t, n in history if t > now - period - width)
        if now >= period:
            if rule.too_slow(now):
                assert exact < needed
            else:
                assert lenient >= needed
        else:
            assert not rule.too_slow(now)
        assert rule.deadline() >= period
