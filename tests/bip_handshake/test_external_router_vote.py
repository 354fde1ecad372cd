"""The NAT-PMP gateway's address as a vote (VoteSource.ROUTER): one voter, as heavy as the
DHT, that never decides alone."""

from __future__ import annotations

from ipaddress import IPv4Address

from bip_handshake._external import DEFAULT_VOTE_WEIGHTS, ExternalIPVoter, VoteSource

ME = IPv4Address("81.2.69.160")


def test_router_and_one_peer_decide() -> None:
    voter = ExternalIPVoter()
    assert voter.vote(ME, None, source=VoteSource.ROUTER, now=0) is None
    assert voter.vote(ME, IPv4Address("5.6.7.8"), now=1) == ME
    assert DEFAULT_VOTE_WEIGHTS[VoteSource.ROUTER] == DEFAULT_VOTE_WEIGHTS[VoteSource.DHT]


def test_the_router_is_one_voter_however_often_it_says() -> None:
    voter = ExternalIPVoter()
    for now in range(5):
        assert voter.vote(ME, None, source=VoteSource.ROUTER, now=float(now)) is None
    assert voter.statistics().votes == 1
    assert voter.statistics().ignored_repeat == 4


def test_a_private_router_address_is_ignored() -> None:
    """Behind a second NAT (CGNAT) the gateway's WAN address is not ours."""
    voter = ExternalIPVoter()
    voter.vote(IPv4Address("100.64.1.2"), None, source=VoteSource.ROUTER, now=0)
    assert voter.statistics().ignored_local == 1
