"""The external IP voter: weights, thresholds, rounds, what it ignores, and its bounds."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake._compact import PeerAddress
from bip_handshake._errors import LocalProtocolError
from bip_handshake._external import (
    DEFAULT_EXTERNAL_ROUND_TIMEOUT,
    ExternalIPVoter,
    VoteSource,
    is_global_address,
)

ME = IPv4Address("81.2.69.160")
OTHER = IPv4Address("81.2.69.161")
ME6 = IPv6Address("2a00:1450:4001:80b::200e")


def _peer(n: int) -> IPv4Address:
    """A distinct public voter per n."""
    return IPv4Address(f"5.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")


def test_three_peers_decide() -> None:
    voter = ExternalIPVoter()
    assert voter.vote(ME, _peer(1), now=0) is None
    assert voter.vote(ME, _peer(2), now=0) is None
    assert voter.vote(ME, _peer(3), now=0) == ME
    assert voter.decided == {4: ME}
    assert voter.address(4) == ME
    assert voter.address(6) is None
    stats = voter.statistics()
    assert (stats.votes, stats.rounds, stats.changes) == (3, 1, 1)
    assert voter.pending() == 0


def test_tracker_and_dht_weigh_more_than_a_peer() -> None:
    voter = ExternalIPVoter()
    assert voter.vote(ME, _peer(9), source=VoteSource.TRACKER, now=0) is None
    assert voter.vote(ME, _peer(1), now=0) == ME
    voter = ExternalIPVoter()
    assert voter.vote(ME, None, source=VoteSource.DHT, now=0) is None
    assert voter.vote(ME, _peer(1), now=0) == ME


def test_one_voter_never_decides_however_heavy() -> None:
    voter = ExternalIPVoter(weights=dict.fromkeys(VoteSource, 100))
    for source in VoteSource:
        voter.vote(ME, _peer(1), source=source, now=0)
        voter.vote(ME, None, source=VoteSource.DHT, now=0)
    # The DHT (as None) and peer 1 are two voters: that decides, one alone did not.
    assert voter.decided == {4: ME}
    voter = ExternalIPVoter(weights=dict.fromkeys(VoteSource, 100))
    for t in range(1000):
        voter.vote(ME, _peer(1), source=VoteSource.TRACKER, now=float(t))
    assert voter.decided == {}


def test_same_voter_counts_once_per_round_whatever_its_port() -> None:
    voter = ExternalIPVoter()
    voter.vote(ME, PeerAddress(_peer(1), 1), now=0)
    voter.vote(ME, PeerAddress(_peer(1), 2), now=0)
    voter.vote(OTHER, _peer(1), now=0)
    assert voter.statistics().ignored_repeat == 2
    assert voter.decided == {}


def test_ipv6_voters_count_by_their_64() -> None:
    voter = ExternalIPVoter()
    a = IPv6Address("2001:4860:1::1")
    b = IPv6Address("2001:4860:1::2")  # same /64
    c = IPv6Address("2001:4860:2::1")
    d = IPv6Address("2001:4860:3::1")
    assert voter.vote(ME6, a, now=0) is None
    assert voter.vote(ME6, b, now=0) is None
    assert voter.statistics().ignored_repeat == 1
    assert voter.vote(ME6, c, now=0) is None
    assert voter.vote(ME6, d, now=0) == ME6
    assert voter.decided == {6: ME6}


def test_families_vote_apart_and_cross_family_votes_are_ignored() -> None:
    voter = ExternalIPVoter()
    assert voter.vote(ME6, _peer(1), now=0) is None
    assert voter.vote(ME, IPv6Address("2001:4860:1::1"), now=0) is None
    assert voter.statistics().ignored_family == 2
    for n in range(3):
        voter.vote(ME, _peer(n), now=0)
    for n in range(3):
        voter.vote(ME6, IPv6Address(f"2001:4860:{n + 1}::1"), now=0)
    assert voter.decided == {4: ME, 6: ME6}


def test_ipv4_mapped_addresses_are_ipv4() -> None:
    voter = ExternalIPVoter()
    mapped = IPv6Address(f"::ffff:{ME}")
    for n in range(3):
        voter.vote(mapped, IPv6Address(f"::ffff:{_peer(n)}"), now=0)
    assert voter.decided == {4: ME}


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
    ],
)
def test_local_candidates_are_ignored(address: str) -> None:
    host = ip_address(address)
    voters: list[IPv4Address | IPv6Address] = []
    voters += [_peer(n) for n in range(5)] if host.version == 4 else []
    voters += [IPv6Address(f"2001:4860:{n + 1}::1") for n in range(5)] if host.version == 6 else []
    voter = ExternalIPVoter()
    for v in voters:
        assert voter.vote(host, v, now=0) is None
    assert voter.decided == {}
    assert voter.statistics().ignored_local == 5
    assert voter.pending() == 0


def test_local_voters_are_ignored_unless_accepted() -> None:
    voter = ExternalIPVoter()
    for n in range(5):
        voter.vote(ME, IPv4Address(f"192.168.0.{n + 1}"), now=0)
    assert voter.decided == {}
    assert voter.statistics().ignored_local == 5
    voter = ExternalIPVoter(accept_local=True)
    me = IPv4Address("127.0.0.9")
    for n in range(3):
        voter.vote(me, IPv4Address(f"127.0.0.{n + 1}"), now=0)
    assert voter.decided == {4: me}
    # Still never an unspecified or multicast address.
    for n in range(5):
        voter.vote(IPv4Address("0.0.0.0"), IPv4Address(f"127.0.1.{n + 1}"), now=1)
        voter.vote(IPv4Address("224.0.0.1"), IPv4Address(f"127.0.2.{n + 1}"), now=1)
    assert voter.decided == {4: me}


def test_a_changed_address_is_learnt_in_the_next_round() -> None:
    voter = ExternalIPVoter()
    for n in range(3):
        voter.vote(ME, _peer(n), now=0)
    # The same voters may vote again: a new round began.
    assert voter.vote(OTHER, _peer(0), now=10) is None
    assert voter.vote(OTHER, _peer(1), now=11) is None
    assert voter.vote(OTHER, _peer(2), now=12) == OTHER
    assert voter.decided == {4: OTHER}
    assert voter.statistics().changes == 2


def test_same_decision_again_is_no_change() -> None:
    voter = ExternalIPVoter()
    for n in range(3):
        voter.vote(ME, _peer(n), now=0)
    assert [voter.vote(ME, _peer(n), now=1) for n in range(3)] == [None, None, None]
    assert voter.statistics().changes == 1
    assert voter.statistics().rounds == 2


def test_a_timed_out_round_decides_a_clear_leader_with_two_voters() -> None:
    voter = ExternalIPVoter()
    assert voter.next_deadline() is None
    voter.vote(ME, _peer(1), now=5)
    voter.vote(ME, _peer(2), now=6)
    assert voter.next_deadline() == 5 + DEFAULT_EXTERNAL_ROUND_TIMEOUT
    assert voter.handle_timer(5 + DEFAULT_EXTERNAL_ROUND_TIMEOUT - 1) == {}
    assert voter.handle_timer(5 + DEFAULT_EXTERNAL_ROUND_TIMEOUT) == {4: ME}
    assert voter.next_deadline() is None


def test_a_timed_out_round_without_a_clear_leader_decides_nothing() -> None:
    voter = ExternalIPVoter()
    voter.vote(ME, _peer(1), now=0)
    voter.vote(ME, _peer(2), now=0)
    voter.vote(OTHER, _peer(3), now=0)
    voter.vote(OTHER, _peer(4), now=0)
    assert voter.handle_timer(1000) == {}
    assert voter.decided == {}
    # One voter alone at timeout does not decide either.
    voter.vote(ME, _peer(1), now=1000)
    assert voter.handle_timer(2000) == {}
    assert voter.statistics().rounds == 2


def test_a_vote_after_the_timeout_ends_the_old_round_first() -> None:
    voter = ExternalIPVoter()
    voter.vote(ME, _peer(1), now=0)
    voter.vote(ME, _peer(2), now=0)
    # This vote comes after the round ran out: the old round decides ME, the vote starts anew.
    assert voter.vote(OTHER, _peer(1), now=DEFAULT_EXTERNAL_ROUND_TIMEOUT) == ME
    assert voter.pending() == 1


def test_candidates_are_bounded() -> None:
    voter = ExternalIPVoter(max_candidates=4, max_voters=1000)
    for n in range(10):
        voter.vote(IPv4Address(f"81.2.0.{n + 1}"), _peer(n), now=0)
    assert voter.pending() == 4
    assert voter.statistics().ignored_full == 6
    # An address already counted still takes votes.
    voter.vote(IPv4Address("81.2.0.1"), _peer(100), now=0)
    assert voter.vote(IPv4Address("81.2.0.1"), _peer(101), now=0) == IPv4Address("81.2.0.1")


def test_max_voters_ends_the_round() -> None:
    voter = ExternalIPVoter(threshold=100, max_voters=5)
    for n in range(4):
        assert voter.vote(ME, _peer(n), now=0) is None
    assert voter.vote(ME, _peer(4), now=0) == ME
    assert voter.pending() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"threshold": True},
        {"min_voters": 1},
        {"max_candidates": 0},
        {"max_voters": 1},
        {"round_timeout": 0},
        {"round_timeout": float("inf")},
        {"round_timeout": "5"},
        {"weights": {VoteSource.PEER: 1}},
        {"weights": {VoteSource.PEER: 1, VoteSource.TRACKER: 0, VoteSource.DHT: 1}},
        {"accept_local": 1},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        ExternalIPVoter(**kwargs)  # type: ignore[arg-type]


def test_bad_vote_types() -> None:
    voter = ExternalIPVoter()
    with pytest.raises(TypeError):
        voter.vote("1.2.3.4", _peer(1), now=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        voter.vote(ME, "1.2.3.4", now=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        voter.vote(ME, _peer(1), source="peer", now=0)  # type: ignore[arg-type]
    assert voter.statistics().votes == 0


def test_scoped_ipv6_is_taken_without_its_zone() -> None:
    voter = ExternalIPVoter()
    scoped = IPv6Address(f"{ME6}%eth0")
    for n in range(3):
        voter.vote(scoped, IPv6Address(f"2001:4860:{n + 1}::1"), now=0)
    assert voter.decided == {6: ME6}


def test_is_global_address() -> None:
    assert is_global_address(ME)
    assert is_global_address(ME6)
    assert not is_global_address(IPv6Address("::ffff:10.0.0.1"))
    assert not is_global_address(IPv4Address("240.0.0.1"))


# -- properties ---------------------------------------------------------------------------------

_hosts4 = st.integers(0, 2**32 - 1).map(IPv4Address)
_hosts6 = st.integers(0, 2**128 - 1).map(IPv6Address)
_hosts = _hosts4 | _hosts6
_votes = st.tuples(
    _hosts,
    st.none() | _hosts,
    st.sampled_from(list(VoteSource)),
    st.floats(0, 10_000, allow_nan=False),
)


@settings(max_examples=100, deadline=None)
@given(
    votes=st.lists(_votes, max_size=400),
    accept_local=st.booleans(),
    max_candidates=st.integers(1, 8),
    max_voters=st.integers(2, 20),
)
def test_memory_is_bounded_under_any_votes(
    votes: list[
        tuple[IPv4Address | IPv6Address, IPv4Address | IPv6Address | None, VoteSource, float]
    ],
    accept_local: bool,
    max_candidates: int,
    max_voters: int,
) -> None:
    voter = ExternalIPVoter(
        max_candidates=max_candidates, max_voters=max_voters, accept_local=accept_local
    )
    now = 0.0
    for reported, by, source, step in votes:
        now += step
        changed = voter.vote(reported, by, source=source, now=now)
        if changed is not None:
            assert changed in voter.decided.values()
        assert voter.pending() <= 2 * max_candidates
        for r in voter._rounds.values():
            assert len(r.voters) < max_voters
            assert len(r.candidates) <= max_candidates
        assert len(voter.decided) <= 2
    voter.handle_timer(now + DEFAULT_EXTERNAL_ROUND_TIMEOUT)
    assert voter.pending() == 0


@settings(max_examples=100, deadline=None)
@given(
    votes=st.lists(
        st.tuples(
            _hosts4,
            st.sampled_from(list(VoteSource)),
            st.floats(0, 1000, allow_nan=False),
            st.integers(0, 65535),
        ),
        max_size=300,
    ),
    who=st.integers(0, 2**24 - 1),
    accept_local=st.booleans(),
)
def test_a_single_voter_ip_never_decides(
    votes: list[tuple[IPv4Address, VoteSource, float, int]], who: int, accept_local: bool
) -> None:
    voter = ExternalIPVoter(weights=dict.fromkeys(VoteSource, 50), accept_local=accept_local)
    me = _peer(who)
    now = 0.0
    for reported, source, step, port in votes:
        now += step
        assert voter.vote(reported, PeerAddress(me, port), source=source, now=now) is None
        assert voter.handle_timer(now) == {}
    assert voter.decided == {}


@settings(max_examples=100, deadline=None)
@given(
    first=st.integers(1, 2**24 - 1).map(lambda n: IPv4Address(0x51000000 + n)),
    second=st.integers(1, 2**24 - 1).map(lambda n: IPv4Address(0x52000000 + n)),
    noise=st.lists(st.tuples(_hosts4, st.integers(0, 999)), max_size=30),
    start=st.floats(0, 1e6, allow_nan=False),
)
def test_the_decision_follows_a_change(
    first: IPv4Address,
    second: IPv4Address,
    noise: list[tuple[IPv4Address, int]],
    start: float,
) -> None:
    voter = ExternalIPVoter()
    now = start
    for reported, n in noise:  # whatever came before, from other voters
        voter.vote(reported, _peer(10_000 + n), now=now)
    now += DEFAULT_EXTERNAL_ROUND_TIMEOUT  # that round is over
    voter.handle_timer(now)
    for n in range(3):
        voter.vote(first, _peer(n), now=now)
    assert voter.address(4) == first
    for n in range(3):
        voter.vote(second, _peer(n), now=now + 1)
    assert voter.address(4) == second
