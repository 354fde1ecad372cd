"""Stateless connection ids: granted per address and window, refused when spoofed or stale."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_utracker._connection_ids import DEFAULT_CONNECTION_ID_WINDOW, ConnectionIds
from bip_utracker._errors import LocalProtocolError

SECRET = bytes(range(32))
ADDRESS = b"192.0.2.7"


def test_valid_for_at_least_one_and_at_most_two_windows() -> None:
    ids = ConnectionIds(SECRET)
    assert ids.window_length == DEFAULT_CONNECTION_ID_WINDOW == 60.0
    # Granted at the very end of a window: still good 60 s later (BEP 15's client cache).
    cid = ids.issue(ADDRESS, now=119.999)
    assert ids.is_valid(cid, ADDRESS, now=119.999)
    assert ids.is_valid(cid, ADDRESS, now=179.99)
    assert not ids.is_valid(cid, ADDRESS, now=180.0)
    # Granted at the very start of a window: good for just under two windows.
    cid = ids.issue(ADDRESS, now=120.0)
    assert ids.is_valid(cid, ADDRESS, now=239.9)
    assert not ids.is_valid(cid, ADDRESS, now=240.0)


def test_same_window_same_id_and_next_window_a_new_one() -> None:
    ids = ConnectionIds(SECRET)
    assert ids.issue(ADDRESS, 61.0) == ids.issue(ADDRESS, 119.0)
    assert ids.issue(ADDRESS, 61.0) != ids.issue(ADDRESS, 121.0)
    assert 0 <= ids.issue(ADDRESS, 61.0) < 2**64


def test_spoofed_ids_are_refused() -> None:
    ids = ConnectionIds(SECRET)
    cid = ids.issue(ADDRESS, 10.0)
    assert not ids.is_valid(cid, b"192.0.2.8", 10.0)  # granted to someone else
    assert not ids.is_valid(cid ^ 1, ADDRESS, 10.0)
    assert not ids.is_valid(0x41727101980, ADDRESS, 10.0)  # the protocol id is no id
    assert not ids.is_valid(0, ADDRESS, 10.0)
    # Another server (another secret) grants other ids.
    other = ConnectionIds(bytes(32))
    assert not other.is_valid(cid, ADDRESS, 10.0)
    assert not ids.is_valid(other.issue(ADDRESS, 10.0), ADDRESS, 10.0)


def test_shared_secret_lets_two_servers_accept_each_others_ids() -> None:
    first, second = ConnectionIds(SECRET), ConnectionIds(SECRET)
    assert second.is_valid(first.issue(ADDRESS, 500.0), ADDRESS, 530.0)


def test_random_secret_by_default() -> None:
    assert ConnectionIds().issue(ADDRESS, 0.0) != ConnectionIds().issue(ADDRESS, 0.0)


def test_time_may_jump_and_go_negative() -> None:
    ids = ConnectionIds(SECRET, window_length=10)
    cid = ids.issue(ADDRESS, -15.0)
    assert ids.is_valid(cid, ADDRESS, -6.0)
    later = ids.issue(ADDRESS, 1e9)
    assert ids.is_valid(later, ADDRESS, 1e9 + 10)
    assert not ids.is_valid(cid, ADDRESS, 1e9)
    assert ids.is_valid(cid, ADDRESS, -15.0)  # jumping back recomputes the window


@pytest.mark.parametrize("secret", [b"", b"short", bytes(65), "a text secret of 32 characters!!"])
def test_bad_secret(secret: object) -> None:
    with pytest.raises(LocalProtocolError, match="secret"):
        ConnectionIds(secret)  # type: ignore[arg-type]


@pytest.mark.parametrize("window", [0, -1.0, math.inf, math.nan, True, "60"])
def test_bad_window(window: object) -> None:
    with pytest.raises(LocalProtocolError, match="window"):
        ConnectionIds(SECRET, window_length=window)  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_bad_time(now: float) -> None:
    with pytest.raises(LocalProtocolError, match="finite"):
        ConnectionIds(SECRET).issue(ADDRESS, now)


@given(
    address=st.binary(min_size=1, max_size=46),
    other=st.binary(min_size=1, max_size=46),
    now=st.floats(min_value=-1e9, max_value=1e9),
    guess=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_property_only_the_granted_id_passes(
    address: bytes, other: bytes, now: float, guess: int
) -> None:
    ids = ConnectionIds(SECRET)
    cid = ids.issue(address, now)
    assert ids.is_valid(cid, address, now)
    assert ids.is_valid(cid, address, now + 59.0)  # within the next window at the latest
    if other != address:
        assert not ids.is_valid(cid, other, now)
    if guess != cid:
        assert not ids.is_valid(guess, address, now)


def test_float_rounding_at_a_window_edge() -> None:
    # 4.3 / 0.1 floors to window 42, whose end (43 * 0.1) is 4.3 itself in floating point.
    ids = ConnectionIds(SECRET, window_length=0.1)
    cid = ids.issue(ADDRESS, 4.3)
    assert ids.issue(ADDRESS, 4.3) == cid
    assert ids.is_valid(cid, ADDRESS, 4.3)
