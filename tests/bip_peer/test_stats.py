"""The sliding-window rate meter and the traffic counters (sans-IO: time is an argument)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_peer._stats import RateMeter, TrafficCounter


def test_rate_of_a_steady_flow_is_its_rate() -> None:
    meter = RateMeter(window=5.0, buckets=10, now=0.0)
    for tenth in range(1, 201):  # 1000 bytes every 0.1 s for 20 s: 10 kB/s
        meter.add(1000, now=tenth / 10)
    assert meter.rate(now=20.0) == pytest.approx(10_000, rel=0.05)
    assert meter.total == 200_000


def test_young_meter_divides_by_its_age_not_the_window() -> None:
    meter = RateMeter(window=10.0, buckets=10, now=100.0)
    meter.add(5000, now=101.0)
    assert meter.rate(now=102.0) == pytest.approx(2500)


def test_rate_falls_to_zero_one_window_after_the_flow_stops() -> None:
    meter = RateMeter(window=2.0, buckets=4, now=0.0)
    for tenth in range(1, 31):
        meter.add(100, now=tenth / 10)
    assert meter.rate(now=3.0) > 0
    assert meter.rate(now=3.0 + 2.0 + 0.5) == 0.0
    meter.add(100, now=10.0)  # and it starts again
    assert meter.rate(now=10.0) > 0


def test_partial_expiry_keeps_recent_buckets() -> None:
    meter = RateMeter(window=4.0, buckets=4, now=0.0)
    meter.add(400, now=0.5)  # bucket 0
    meter.add(800, now=3.5)  # bucket 3
    assert meter.rate(now=3.5) == pytest.approx(1200 / 3.5)
    # At 4.5 bucket 0 has left the window; the kept buckets cover 1.0 .. 4.5.
    assert meter.rate(now=4.5) == pytest.approx(800 / 3.5)


def test_time_going_backwards_counts_at_the_latest_time() -> None:
    meter = RateMeter(window=1.0, buckets=2, now=0.0)
    meter.add(10, now=5.0)
    meter.add(10, now=4.0)  # earlier than the latest: counted in the newest bucket
    assert meter.total == 20
    assert meter.rate(now=3.0) == meter.rate(now=5.0)


def test_same_instant_as_start_does_not_divide_by_zero() -> None:
    meter = RateMeter(window=1.0, buckets=4, now=0.0)
    meter.add(100, now=0.0)
    assert meter.rate(now=0.0) == pytest.approx(100 / 0.25)


@pytest.mark.parametrize(
    ("window", "buckets", "now"),
    [
        (0.0, 1, 0.0),
        (-1.0, 1, 0.0),
        (math.inf, 1, 0.0),
        (math.nan, 1, 0.0),
        (1.0, 0, 0.0),
        (1.0, True, 0.0),
        (1.0, 2, math.nan),
    ],
)
def test_bad_parameters_are_refused(window: float, buckets: int, now: float) -> None:
    with pytest.raises(ValueError, match=r"rate|bucket|now"):
        RateMeter(window, buckets, now=now)


def test_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="not negative"):
        RateMeter().add(-1, now=1.0)


@given(
    st.lists(
        st.tuples(st.integers(0, 10**9), st.floats(0, 1e6, allow_nan=False)),
        max_size=50,
    ),
    st.floats(0.1, 100),
    st.integers(1, 20),
)
def test_rate_is_never_negative_and_never_above_all_data_per_bucket(
    samples: list[tuple[int, float]], window: float, buckets: int
) -> None:
    meter = RateMeter(window, buckets, now=0.0)
    latest = 0.0
    for amount, now in samples:
        meter.add(amount, now)
        latest = max(latest, now)
        rate = meter.rate(now)
        assert 0.0 <= rate <= meter.total / (window / buckets) + 1e-6
    assert meter.total == sum(amount for amount, _ in samples)
    assert meter.rate(latest + window * 2) == 0.0


def test_traffic_counter_counts_both_ways() -> None:
    counter = TrafficCounter(now=0.0, window=1.0, buckets=2)
    counter.sent(100, now=0.5)
    counter.received(300, now=0.5)
    counter.messages_sent += 2
    counter.messages_received += 3
    assert (counter.bytes_sent, counter.bytes_received) == (100, 300)
    # The window covers 0.0 .. 0.75 (the meter is younger than its window).
    assert counter.send_rate(now=0.75) == pytest.approx(100 / 0.75)
    assert counter.receive_rate(now=0.75) == pytest.approx(300 / 0.75)
    assert (counter.messages_sent, counter.messages_received) == (2, 3)
