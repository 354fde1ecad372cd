"""Our external address, from what the nodes we query say they see (BEP 42's ``ip``).

Every response may carry ``ip``: our address as the responder saw it. Responders can lie, so,
like libtorrent's ``ip_voter`` (``cast_vote`` / ``maybe_rotate``), we count votes in rounds,
each family on its own:

- One vote per responder IP per round. Votes naming a local address (private, loopback,
  link-local, CGNAT, unique-local...: libtorrent's ``is_local``), an unspecified or a
  multicast one are ignored (libtorrent's ``cast_vote`` ignores the first three; a multicast
  address is never ours), as are votes across families (an IPv4 responder naming an IPv6
  address).
- The first decision: an address is believed once ``threshold`` distinct responders named it
  and it leads the runner-up by libtorrent's rule: ``top * 2 // 3 > runner_up`` (integer
  arithmetic, as ``maybe_rotate``), so two addresses neck and neck decide nothing.
- Once decided, a round is judged only when it holds ``rotate_votes`` (50) votes or
  ``rotate_interval`` (five minutes) has passed since the last decision (libtorrent's
  ``maybe_rotate``); then its leader, with ``threshold`` voters and the same lead, is the
  address. Judging a round starts the next one from nothing. So a handful of responders
  agreeing on another address within a few seconds changes nothing, while a real move (a new
  lease, a moved laptop) is followed within minutes.
- Memory is bounded: a round counts at most ``max_candidates`` addresses (a new one evicts
  the newest of those with the fewest votes, as libtorrent drops the last after a stable
  sort) and ``max_voters`` voters; a round that fills up undecided starts over.

>>> from bip_handshake import PeerAddress
>>> voter = ExternalAddressVoter(threshold=2)
>>> me = PeerAddress.parse("1.2.3.4:6881")
>>> voter.vote(me, PeerAddress.parse("5.5.5.5:1"), now=0.0) is None
True
>>> voter.vote(me, PeerAddress.parse("5.5.5.5:2"), now=1.0) is None  # the same voter again
True
>>> voter.vote(me, PeerAddress.parse("6.6.6.6:1"), now=2.0) == me
True
"""

from __future__ import annotations

import heapq
import math
from ipaddress import IPv4Address, IPv6Address

from bip_handshake import Family, PeerAddress

from ._errors import LocalProtocolError
from ._node_id import is_bep42_exempt

__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_MAX_VOTERS",
    "ROTATE_INTERVAL",
    "ROTATE_VOTES",
    "ExternalAddressVoter",
    "is_votable",
]

DEFAULT_MAX_CANDIDATES = 64
"""Distinct addresses counted in one round, per family."""

DEFAULT_MAX_VOTERS = 1024
"""Distinct responders counted in one round, per family; an undecided round this full starts
over."""

ROTATE_VOTES = 50
"""Votes after which a round is judged even before :data:`ROTATE_INTERVAL` (libtorrent's
``maybe_rotate``: ``m_total_votes < 50``)."""

ROTATE_INTERVAL = 300.0
"""Seconds after the last decision when a round is judged however few its votes (libtorrent's
``maybe_rotate``: ``minutes(5)``)."""

_IP = IPv4Address | IPv6Address


def is_votable(ip: IPv4Address | IPv6Address) -> bool:
    """Whether a vote naming *ip* as our address counts: not local (libtorrent's ``is_local``,
    which is :func:`~bip_dht.is_bep42_exempt`: private, loopback, link-local, CGNAT, IPv6
    site-local and unique-local...), unspecified nor multicast.

    >>> is_votable(IPv4Address("81.2.69.160")), is_votable(IPv4Address("192.168.1.2"))
    (True, False)
    """
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_unspecified or ip.is_multicast or is_bep42_exempt(ip))


class _Candidate:
    __slots__ = ("port", "voters")

    def __init__(self, port: int) -> None:
        self.port = port  # the port the latest voter saw (a NAT may show each another)
        self.voters = 0


class _Round:
    __slots__ = ("candidates", "voters")

    def __init__(self) -> None:
        # insertion order is arrival order: eviction takes the newest of the weakest
        self.candidates: dict[_IP, _Candidate] = {}
        self.voters: set[_IP] = set()


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalProtocolError(f"{name} is a positive int, got {value!r}")


class ExternalAddressVoter:
    """Counts responders' reports of our address; see the module docstring.

    Args:
        threshold: distinct responders the winning address needs.
        max_candidates: distinct addresses counted per family and round.
        max_voters: distinct responders counted per family and round.
        rotate_votes: votes after which a round is judged once an address is decided.
        rotate_interval: seconds after a decision when a round is judged anyway.

    Raises:
        LocalProtocolError: an argument is out of range.
    """

    __slots__ = (
        "_decided",
        "_last_decision",
        "_max_candidates",
        "_max_voters",
        "_rotate_interval",
        "_rotate_votes",
        "_rounds",
        "_threshold",
    )

    def __init__(
        self,
        *,
        threshold: int,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
        max_voters: int = DEFAULT_MAX_VOTERS,
        rotate_votes: int = ROTATE_VOTES,
        rotate_interval: float = ROTATE_INTERVAL,
    ) -> None:
        for name, value in (
            ("threshold", threshold),
            ("max_candidates", max_candidates),
            ("max_voters", max_voters),
            ("rotate_votes", rotate_votes),
        ):
            _positive(name, value)
        if (
            isinstance(rotate_interval, bool)
            or not isinstance(rotate_interval, int | float)
            or not 0 <= rotate_interval < math.inf
        ):
            raise LocalProtocolError(
                f"rotate_interval is a non-negative number, got {rotate_interval!r}"
            )
        # A round is dropped undecided once it holds max_voters responders: a threshold (or a
        # rotation count) above that could never be reached, and no address ever settled.
        for name, value in (("threshold", threshold), ("rotate_votes", rotate_votes)):
            if value > max_voters:
                raise LocalProtocolError(
                    f"{name} ({value}) is at most max_voters ({max_voters}): a round holds no more"
                )
        self._threshold = threshold
        self._max_candidates = max_candidates
        self._max_voters = max_voters
        self._rotate_votes = rotate_votes
        self._rotate_interval = float(rotate_interval)
        self._rounds: dict[Family, _Round] = {}
        self._decided: dict[Family, PeerAddress] = {}
        self._last_decision: dict[Family, float] = {}

    @property
    def decided(self) -> dict[Family, PeerAddress]:
        """The address each family's last decision settled on."""
        return dict(self._decided)

    def vote(self, reported: PeerAddress, voter: PeerAddress, *, now: float) -> PeerAddress | None:
        """*voter* says it sees us at *reported*, at time *now* (seconds, monotonic); the
        family's new address when this vote changed it (the first decision included), with
        the port its latest voter saw, else None."""
        reported = reported.normalized()
        family = reported.family
        voter = voter.normalized()
        if voter.family != family or not is_votable(reported.host):
            return None
        current = self._rounds.get(family)
        if current is None:
            current = self._rounds[family] = _Round()
        if voter.host in current.voters:
            return None
        candidates = current.candidates
        candidate = candidates.get(reported.host)
        if candidate is None:
            if len(candidates) >= self._max_candidates:
                fewest = min(c.voters for c in candidates.values())
                weakest = [ip for ip, c in candidates.items() if c.voters == fewest]
                del candidates[weakest[-1]]
            candidate = candidates[reported.host] = _Candidate(reported.port)
        current.voters.add(voter.host)
        candidate.voters += 1
        candidate.port = reported.port
        return self._judge(family, current, now)

    def _judge(self, family: Family, current: _Round, now: float) -> PeerAddress | None:
        last = self._last_decision.get(family)
        if (
            last is not None
            and len(current.voters) < self._rotate_votes
            and now - last < self._rotate_interval
        ):
            return None  # decided recently: not enough votes yet to change our mind
        winner = self._leader(current)
        if winner is None:
            if len(current.voters) >= self._max_voters:
                del self._rounds[family]  # undecidable and full: count afresh
            return None
        host, candidate = winner
        del self._rounds[family]
        self._last_decision[family] = now
        previous = self._decided.get(family)
        self._decided[family] = PeerAddress(host, candidate.port)
        if previous is not None and previous.host == host:
            return None
        return self._decided[family]

    def _leader(self, current: _Round) -> tuple[_IP, _Candidate] | None:
        """The round's leader if it has ``threshold`` voters and leads the runner-up by
        libtorrent's ``num_votes * 2 / 3 > runner_up`` (integers)."""
        # The two best are all the rule reads (sorted() is stable, and so is nlargest: the
        # first candidate heard wins a tie, as before).
        ranked = heapq.nlargest(2, current.candidates.items(), key=lambda kv: kv[1].voters)
        if not ranked:
            return None
        host, top = ranked[0]
        if top.voters < self._threshold:
            return None
        if len(ranked) > 1 and top.voters * 2 // 3 <= ranked[1][1].voters:
            return None
        return host, top
