"""Write tokens: bound to the IP and target, rotating secret, previous secret accepted."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_dht._errors import LocalProtocolError
from bip_dht._tokens import DEFAULT_ROTATE_INTERVAL, DEFAULT_TOKEN_SIZE, TokenManager

IP = IPv4Address("192.0.2.1")
TARGET = b"\x01" * 20


def _manager(seed: int = 0, now: float = 0.0, token_size: int = DEFAULT_TOKEN_SIZE) -> TokenManager:
    return TokenManager(random.Random(seed), now, token_size=token_size)


def test_a_token_verifies_for_its_ip_and_target_only() -> None:
    tokens = _manager()
    token = tokens.token(IP, TARGET, now=1.0)
    assert len(token) == DEFAULT_TOKEN_SIZE
    assert tokens.verify(token, IP, TARGET, now=2.0)
    assert not tokens.verify(token, IPv4Address("192.0.2.2"), TARGET, now=2.0)
    assert not tokens.verify(token, IP, b"\x02" * 20, now=2.0)
    assert not tokens.verify(token, IPv6Address("2001:db8::1"), TARGET, now=2.0)


def test_tokens_are_stable_within_a_rotation() -> None:
    tokens = _manager()
    assert tokens.token(IP, TARGET, now=0.0) == tokens.token(IP, TARGET, now=299.0)


def test_rotation_keeps_the_previous_secret_for_one_interval() -> None:
    tokens = _manager()
    old = tokens.token(IP, TARGET, now=10.0)
    assert tokens.next_rotation == DEFAULT_ROTATE_INTERVAL
    assert tokens.verify(old, IP, TARGET, now=DEFAULT_ROTATE_INTERVAL + 1)
    new = tokens.token(IP, TARGET, now=DEFAULT_ROTATE_INTERVAL + 1)
    assert new != old
    assert tokens.verify(old, IP, TARGET, now=2 * DEFAULT_ROTATE_INTERVAL - 1)
    # The second rotation retires the first secret.
    assert not tokens.verify(old, IP, TARGET, now=2 * DEFAULT_ROTATE_INTERVAL)
    assert tokens.verify(new, IP, TARGET, now=2 * DEFAULT_ROTATE_INTERVAL)
    assert not tokens.verify(new, IP, TARGET, now=3 * DEFAULT_ROTATE_INTERVAL)


def test_a_long_silence_retires_both_secrets() -> None:
    tokens = _manager()
    token = tokens.token(IP, TARGET, now=0.0)
    assert tokens.rotate_if_due(10 * DEFAULT_ROTATE_INTERVAL)
    assert not tokens.verify(token, IP, TARGET, now=10 * DEFAULT_ROTATE_INTERVAL)
    assert tokens.next_rotation == 11 * DEFAULT_ROTATE_INTERVAL


def test_a_clock_going_backwards_rotates_nothing() -> None:
    tokens = _manager(now=1000.0)
    token = tokens.token(IP, TARGET, now=1000.0)
    assert not tokens.rotate_if_due(0.0)
    assert tokens.verify(token, IP, TARGET, now=0.0)


def test_mapped_ipv6_counts_as_ipv4() -> None:
    tokens = _manager()
    token = tokens.token(IP, TARGET, now=0.0)
    assert tokens.verify(token, IPv6Address("::ffff:192.0.2.1"), TARGET, now=0.0)


def test_secrets_come_from_the_injected_source() -> None:
    assert _manager(1).token(IP, TARGET, 0.0) == _manager(1).token(IP, TARGET, 0.0)
    assert _manager(1).token(IP, TARGET, 0.0) != _manager(2).token(IP, TARGET, 0.0)
    system = TokenManager(random.SystemRandom(), 0.0)
    assert system.verify(system.token(IP, TARGET, 0.0), IP, TARGET, 0.0)


@pytest.mark.parametrize("garbage", [b"", b"x" * 7, b"x" * 9, "abcdefgh", None, 12345678])
def test_garbage_tokens_are_invalid_not_errors(garbage: object) -> None:
    assert not _manager().verify(garbage, IP, TARGET, now=0.0)


@pytest.mark.parametrize(
    "options",
    [
        {"rotate_interval": 0},
        {"rotate_interval": -1.0},
        {"token_size": 3},
        {"token_size": 33},
        {"token_size": True},
        {"token_size": 8.0},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        TokenManager(random.Random(0), 0.0, **options)


def test_bad_arguments_are_refused() -> None:
    tokens = _manager()
    with pytest.raises(LocalProtocolError):
        tokens.token("192.0.2.1", TARGET, now=0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        tokens.token(IP, "target", now=0.0)  # type: ignore[arg-type]
    token = tokens.token(IP, TARGET, now=0.0)
    with pytest.raises(LocalProtocolError):
        tokens.verify(token, IP, "target", now=0.0)  # type: ignore[arg-type]


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=32),
    st.floats(0, 10 * DEFAULT_ROTATE_INTERVAL),
    st.sampled_from([4, 8, 20]),
)
def test_tokens_verify_until_two_intervals_and_only_for_their_ip(
    ip: int, other: int, target: bytes, delay: float, size: int
) -> None:
    tokens = _manager(now=0.0, token_size=size)
    token = tokens.token(IPv4Address(ip), target, now=0.0)
    assert len(token) == size
    valid = tokens.verify(token, IPv4Address(ip), target, now=delay)
    assert valid == (delay < 2 * DEFAULT_ROTATE_INTERVAL)
    if other != ip and size >= 8:
        assert not tokens.verify(token, IPv4Address(other), target, now=delay)
