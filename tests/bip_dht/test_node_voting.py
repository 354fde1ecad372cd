"""BEP 42 external address voting: thresholds, one vote per responder, bounds, rounds."""

from __future__ import annotations

import pytest

from bip_dht import DHTConfig
from bip_dht._errors import LocalProtocolError
from bip_dht._node_voting import ExternalAddressVoter
from bip_handshake import PeerAddress

ME = PeerAddress.parse("1.2.3.4:6881")


def voter_at(i: int) -> PeerAddress:
    return PeerAddress.parse(f"5.6.{i // 250}.{i % 250 + 1}:6881")


def test_threshold_distinct_responders() -> None:
    voter = ExternalAddressVoter(threshold=3)
    assert voter.vote(ME, voter_at(1), now=0.0) is None
    assert voter.vote(ME, voter_at(1), now=0.0) is None  # a second vote from the same IP is ignored
    assert voter.vote(ME, PeerAddress.parse("5.6.0.2:9999"), now=0.0) is None  # same IP, other port
    assert voter.vote(ME, voter_at(2), now=0.0) is None
    assert voter.vote(ME, voter_at(3), now=0.0) == ME
    assert voter.decided == {4: ME}


def test_ports_are_not_voted_on() -> None:
    voter = ExternalAddressVoter(threshold=2)
    assert voter.vote(PeerAddress.parse("1.2.3.4:1000"), voter_at(1), now=0.0) is None
    assert voter.vote(PeerAddress.parse("1.2.3.4:2000"), voter_at(2), now=0.0) == PeerAddress.parse(
        "1.2.3.4:2000"
    )


def test_a_new_round_notices_a_new_address() -> None:
    voter = ExternalAddressVoter(threshold=2)
    voter.vote(ME, voter_at(1), now=0.0)
    assert voter.vote(ME, voter_at(2), now=0.0) == ME
    moved = PeerAddress.parse("9.9.9.9:6881")
    voter.vote(moved, voter_at(1), now=1.0)  # the same responders may vote again in the new round
    assert voter.vote(moved, voter_at(2), now=2.0) is None  # decided just now: not yet
    assert voter.vote(moved, voter_at(3), now=300.0) == moved  # five minutes on
    assert voter.decided[4] == moved


def test_families_vote_apart_and_crossed_votes_are_ignored() -> None:
    voter = ExternalAddressVoter(threshold=1)
    me6 = PeerAddress.parse("[2001:db8::1]:6881")
    assert voter.vote(me6, voter_at(1), now=0.0) is None  # an IPv4 responder naming an IPv6 address
    assert voter.vote(me6, PeerAddress.parse("[2001:db8::2]:1"), now=0.0) == me6
    assert voter.vote(ME, PeerAddress.parse("[::ffff:5.6.7.8]:1"), now=0.0) == ME  # mapped is IPv4
    assert voter.decided == {4: ME, 6: me6}


def test_candidates_are_bounded() -> None:
    voter = ExternalAddressVoter(threshold=2, max_candidates=4)
    for i in range(100):
        voter.vote(PeerAddress.parse(f"7.7.7.{i + 1}:1"), voter_at(i), now=0.0)
    assert voter.decided == {}
    # the flood churned one slot; the honest address, held since the start, still wins once
    # it leads the runner-up clearly (3 votes to 1: 3 * 2 // 3 > 1)
    assert voter.vote(PeerAddress.parse("7.7.7.1:1"), voter_at(500), now=0.0) is None
    assert voter.vote(PeerAddress.parse("7.7.7.1:1"), voter_at(501), now=0.0) == PeerAddress.parse(
        "7.7.7.1:1"
    )


def test_bad_settings() -> None:
    with pytest.raises(LocalProtocolError):
        ExternalAddressVoter(threshold=0)
    with pytest.raises(LocalProtocolError):
        ExternalAddressVoter(threshold=2, max_candidates=True)


@pytest.mark.parametrize("name", ["threshold", "rotate_votes"])
def test_a_count_no_round_can_hold_is_refused(name: str) -> None:
    # A round is dropped undecided at max_voters responders: a threshold above it never settled.
    with pytest.raises(LocalProtocolError, match=f"{name} .* is at most max_voters"):
        ExternalAddressVoter(**{"threshold": 3, "rotate_votes": 5, "max_voters": 8, name: 9})
    ExternalAddressVoter(**{"threshold": 3, "rotate_votes": 5, "max_voters": 9, name: 9})


def test_the_config_bounds_external_ip_votes_by_what_a_round_holds() -> None:
    with pytest.raises(LocalProtocolError, match="external_ip_votes"):
        DHTConfig(external_ip_votes=2000)
    assert DHTConfig(external_ip_votes=1024).external_ip_votes == 1024
