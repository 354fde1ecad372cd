"""Our external address, from what the nodes we query say they see (BEP 42's ``ip``).

Every response may carry ``ip``: our address as the responder saw it. One responder could lie,
so, like libtorrent's ip_voter, we count votes: one per responder IP per round, and an address
wins the round once ``threshold`` distinct responders named it. Then a new round starts from
nothing, so a later change of address (a new lease, a moved laptop) is noticed too. Each
family votes on its own. Memory is bounded: at most ``max_candidates`` addresses are counted in
a round (a flood of made-up addresses stops there) and each holds fewer than ``threshold``
voters until it wins.

>>> from bip_handshake import PeerAddress
>>> voter = ExternalAddressVoter(threshold=2)
>>> me = PeerAddress.parse("1.2.3.4:6881")
>>> voter.vote(me, PeerAddress.parse("5.5.5.5:1")) is None
True
>>> voter.vote(me, PeerAddress.parse("5.5.5.5:2")) is None  # the same voter again
True
>>> voter.vote(me, PeerAddress.parse("6.6.6.6:1")) == me
True
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from bip_handshake import Family, PeerAddress

from ._errors import LocalProtocolError

__all__ = ["DEFAULT_MAX_CANDIDATES", "ExternalAddressVoter"]

DEFAULT_MAX_CANDIDATES = 64
"""Distinct addresses counted in one round, per family."""

_IP = IPv4Address | IPv6Address


class ExternalAddressVoter:
    """Counts responders' reports of our address; see the module docstring."""

    __slots__ = ("_decided", "_max_candidates", "_threshold", "_voters", "_votes")

    def __init__(self, *, threshold: int, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> None:
        for name, value in (("threshold", threshold), ("max_candidates", max_candidates)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} is a positive int, got {value!r}")
        self._threshold = threshold
        self._max_candidates = max_candidates
        # family -> candidate IP -> the responder IPs that named it (this round); the port is
        # not voted on (a NAT may show each responder another one)
        self._votes: dict[Family, dict[_IP, set[_IP]]] = {}
        # family -> every responder IP that voted this round
        self._voters: dict[Family, set[_IP]] = {}
        self._decided: dict[Family, PeerAddress] = {}

    @property
    def decided(self) -> dict[Family, PeerAddress]:
        """The address each family's last finished round settled on."""
        return dict(self._decided)

    def vote(self, reported: PeerAddress, voter: PeerAddress) -> PeerAddress | None:
        """*voter* says it sees us at *reported*; the address when this vote ends a round
        (with the port this voter saw).

        Votes across families (an IPv4 responder naming an IPv6 address) are ignored.
        """
        reported = reported.normalized()
        family = reported.family
        voter_ip = voter.normalized().host
        if voter.normalized().family != family:
            return None
        voters = self._voters.setdefault(family, set())
        if voter_ip in voters:
            return None
        votes = self._votes.setdefault(family, {})
        ballots = votes.get(reported.host)
        if ballots is None:
            if len(votes) >= self._max_candidates:
                return None
            ballots = votes[reported.host] = set()
        voters.add(voter_ip)
        ballots.add(voter_ip)
        if len(ballots) < self._threshold:
            return None
        self._votes[family] = {}
        self._voters[family] = set()
        self._decided[family] = reported
        return reported
