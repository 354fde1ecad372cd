"""Our external IP address, voted on by the parties that see us (sans-IO).

Behind a NAT, or listening on ``0.0.0.0`` / ``::``, a client does not know the address the
internet reaches it at; the parties it talks to do: a peer's BEP 10 extended handshake says
``yourip``, an HTTP tracker's BEP 24 ``external ip``, the DHT's BEP 42 voting settles on
one from many nodes' ``ip``, and a NAT-PMP gateway reports its own. Any one of them may be
wrong or lie, so, like libtorrent's ``ip_voter``, :class:`ExternalIPVoter` counts votes:

- one vote per voter per round: a voter is its IP (an IPv6 voter its /64, which one host
  usually owns whole), so one machine cannot vote twice by reconnecting or changing ports;
- votes are weighted by their source (:class:`VoteSource`): a tracker, or the DHT's address
  decided from many nodes, counts more than one peer;
- an address is decided once its votes weigh ``threshold`` *and* come from at least
  ``min_voters`` voters (at least two), so a single voter, however weighty, never decides;
- a round ends at a decision, after ``max_voters`` votes, or ``round_timeout`` seconds after
  its first vote; a round that ends without a decision still decides its leader if
  ``min_voters`` named it and it leads the runner-up clearly (libtorrent's "two thirds"
  rule), so votes trickling in slowly get somewhere. Then a new round starts from nothing,
  which is how a changed address (a new lease, a moved laptop) is learnt;
- private, loopback, link-local, multicast, reserved and unspecified candidates and voters
  are ignored (a LAN neighbour's ``yourip`` says nothing about the internet), unless
  ``accept_local`` (for tests and closed networks); a vote across families (an IPv4 voter
  naming an IPv6 address) is ignored too;
- memory is bounded: at most ``max_candidates`` addresses and ``max_voters`` voters per
  family and round, whatever the votes.

Each family votes on its own. Ports are not voted on (a NAT may show each party another one):
the caller pairs the decided IP with its own listening ports. Time is an argument.

bip_dht keeps its own BEP 42 voter (``bip_dht.ExternalAddressVoter``, libtorrent's ip_voter
rules: votes naming a local address are ignored there, so on a LAN-only swarm the DHT gives no
vote and peers' ``yourip`` decide alone); it decides an address with its port and may be
configured to believe a single responder; its node id follows that decision, so its rules stay
its own. This voter takes the DHT's decision as one weighty vote instead.

>>> from ipaddress import ip_address
>>> voter = ExternalIPVoter()
>>> me = ip_address("81.2.69.160")
>>> voter.vote(me, ip_address("5.6.7.8"), now=0.0) is None  # a peer
True
>>> voter.vote(me, ip_address("5.6.7.8"), now=1.0) is None  # the same peer again
True
>>> voter.vote(me, ip_address("9.9.9.9"), source=VoteSource.TRACKER, now=2.0)
IPv4Address('81.2.69.160')
>>> voter.decided
{4: IPv4Address('81.2.69.160')}
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Final, TypeAlias

from ._compact import Family, PeerAddress, host_network
from ._errors import LocalProtocolError

__all__ = [
    "DEFAULT_EXTERNAL_MAX_CANDIDATES",
    "DEFAULT_EXTERNAL_MAX_VOTERS",
    "DEFAULT_EXTERNAL_MIN_VOTERS",
    "DEFAULT_EXTERNAL_ROUND_TIMEOUT",
    "DEFAULT_EXTERNAL_THRESHOLD",
    "DEFAULT_VOTE_WEIGHTS",
    "ExternalIPStatistics",
    "ExternalIPVoter",
    "VoteSource",
    "is_global_address",
]

IPAddress: TypeAlias = IPv4Address | IPv6Address


class VoteSource(enum.Enum):
    """Who says what our address is.

    - ``PEER``: a peer's BEP 10 extended handshake (``yourip``).
    - ``TRACKER``: an HTTP tracker's announce response (BEP 24 ``external ip``).
    - ``DHT``: the address the DHT's own BEP 42 voting decided, from many nodes.
    - ``ROUTER``: the external address our NAT gateway reports (NAT-PMP, RFC 6886 3.2;
      libtorrent's ``source_router``).
    """

    PEER = "peer"
    TRACKER = "tracker"
    DHT = "dht"
    ROUTER = "router"


DEFAULT_VOTE_WEIGHTS: Final[Mapping[VoteSource, int]] = {
    VoteSource.PEER: 1,
    VoteSource.TRACKER: 2,
    VoteSource.DHT: 3,
    VoteSource.ROUTER: 3,
}
"""A vote's weight by source: a tracker sees many clients and has no stake in lying to one,
the DHT's address is already the agreement of several nodes, and the gateway knows its own
WAN address (it is still one voter: behind a second NAT its address is not ours, so a peer
must agree)."""

DEFAULT_EXTERNAL_THRESHOLD: Final = 3
"""Weight an address needs to be decided at once: three peers, a tracker and a peer, or the
DHT (or the gateway) and a peer."""

DEFAULT_EXTERNAL_MIN_VOTERS: Final = 2
"""Distinct voters an address needs, whatever its weight."""

DEFAULT_EXTERNAL_MAX_CANDIDATES: Final = 32
"""Distinct addresses counted per family and round; further ones are ignored."""

DEFAULT_EXTERNAL_MAX_VOTERS: Final = 64
"""Votes per family and round; the round ends at this many (libtorrent rotates at 50)."""

DEFAULT_EXTERNAL_ROUND_TIMEOUT: Final = 300.0
"""Seconds from a round's first vote to its end (libtorrent rotates every five minutes)."""


def is_global_address(host: IPAddress) -> bool:
    """Whether ``host`` could be an address on the internet: not private, loopback,
    link-local, shared (CGNAT, 100.64/10), multicast, reserved nor unspecified (an
    IPv4-mapped IPv6 address is judged by its IPv4 address).

    >>> from ipaddress import ip_address
    >>> is_global_address(ip_address("203.0.114.1")), is_global_address(ip_address("10.1.2.3"))
    (True, False)
    >>> is_global_address(ip_address("::ffff:127.0.0.1"))
    False
    """
    if isinstance(host, IPv6Address) and host.ipv4_mapped is not None:
        host = host.ipv4_mapped
    return host.is_global and not host.is_multicast and not host.is_reserved


@dataclass(frozen=True, slots=True)
class ExternalIPStatistics:
    """A snapshot of an :class:`ExternalIPVoter`'s counters.

    Attributes:
        votes: votes counted.
        ignored_local: votes ignored for a local (or unspecified...) address or voter.
        ignored_repeat: votes ignored because their voter had voted this round already.
        ignored_family: votes ignored for naming an address of another family than the
            voter's.
        ignored_full: votes for a new address ignored because the round counts as many
            addresses as it may.
        rounds: rounds ended (with or without a decision).
        changes: times a family's decided address changed (the first decision included).
    """

    votes: int
    ignored_local: int
    ignored_repeat: int
    ignored_family: int
    ignored_full: int
    rounds: int
    changes: int


_VoterKey: TypeAlias = IPv4Address | IPv6Network | VoteSource


class _Candidate:
    __slots__ = ("order", "voters", "weight")

    def __init__(self, order: int) -> None:
        self.order = order  # arrival within the round: ties go to the earlier address
        self.weight = 0
        self.voters = 0


class _Round:
    __slots__ = ("candidates", "started", "voters")

    def __init__(self, started: float) -> None:
        self.started = started
        self.candidates: dict[IPAddress, _Candidate] = {}
        self.voters: set[_VoterKey] = set()


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalProtocolError(f"{name} is a positive int, got {value!r}")
    return value


def _normalized(host: object, what: str) -> IPAddress:
    if isinstance(host, PeerAddress):
        host = host.host
    if not isinstance(host, IPv4Address | IPv6Address):
        raise TypeError(f"{what} is an IPv4Address, IPv6Address or PeerAddress, got {host!r}")
    if isinstance(host, IPv6Address):
        if host.ipv4_mapped is not None:
            return host.ipv4_mapped
        if host.scope_id is not None:
            return IPv6Address(host.packed)  # the zone says nothing about the address
    return host


def _family(host: IPAddress) -> Family:
    return 4 if isinstance(host, IPv4Address) else 6


class ExternalIPVoter:
    """Decides our external IP per family from votes; see the module docstring.

    Args:
        threshold: weight an address needs to be decided at once.
        min_voters: distinct voters an address needs (at least 2: one voter never decides).
        weights: a vote's weight by source (every source present, each a positive int);
            :data:`DEFAULT_VOTE_WEIGHTS` by default.
        max_candidates: distinct addresses counted per family and round.
        max_voters: votes per family and round (at least ``min_voters``).
        round_timeout: seconds from a round's first vote to its end (positive).
        accept_local: take private, loopback and link-local addresses and voters (tests on
            loopback, closed networks); multicast, reserved and unspecified candidates are
            still ignored.

    Raises:
        LocalProtocolError: an argument is out of range.
    """

    __slots__ = (
        "_accept_local",
        "_changes",
        "_decided",
        "_ignored_family",
        "_ignored_full",
        "_ignored_local",
        "_ignored_repeat",
        "_max_candidates",
        "_max_voters",
        "_min_voters",
        "_round_timeout",
        "_rounds",
        "_rounds_ended",
        "_threshold",
        "_votes",
        "_weights",
    )

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_EXTERNAL_THRESHOLD,
        min_voters: int = DEFAULT_EXTERNAL_MIN_VOTERS,
        weights: Mapping[VoteSource, int] | None = None,
        max_candidates: int = DEFAULT_EXTERNAL_MAX_CANDIDATES,
        max_voters: int = DEFAULT_EXTERNAL_MAX_VOTERS,
        round_timeout: float = DEFAULT_EXTERNAL_ROUND_TIMEOUT,
        accept_local: bool = False,
    ) -> None:
        self._threshold = _positive_int("threshold", threshold)
        self._min_voters = _positive_int("min_voters", min_voters)
        if min_voters < 2:
            raise LocalProtocolError(
                f"min_voters is at least 2 (one voter never decides), got {min_voters}"
            )
        self._max_candidates = _positive_int("max_candidates", max_candidates)
        self._max_voters = _positive_int("max_voters", max_voters)
        if max_voters < min_voters:
            raise LocalProtocolError(
                f"max_voters ({max_voters}) must be at least min_voters ({min_voters})"
            )
        if (
            isinstance(round_timeout, bool)
            or not isinstance(round_timeout, int | float)
            or not 0 < round_timeout < math.inf
        ):
            raise LocalProtocolError(f"round_timeout is a positive number, got {round_timeout!r}")
        self._round_timeout = float(round_timeout)
        table = DEFAULT_VOTE_WEIGHTS if weights is None else weights
        self._weights = {s: _positive_int(f"weights[{s.name}]", table.get(s)) for s in VoteSource}
        if not isinstance(accept_local, bool):
            raise LocalProtocolError(f"accept_local is a bool, got {accept_local!r}")
        self._accept_local = accept_local
        self._rounds: dict[Family, _Round] = {}
        self._decided: dict[Family, IPAddress] = {}
        self._votes = 0
        self._ignored_local = 0
        self._ignored_repeat = 0
        self._ignored_family = 0
        self._ignored_full = 0
        self._rounds_ended = 0
        self._changes = 0

    # -- reading -----------------------------------------------------------------------------

    @property
    def decided(self) -> dict[Family, IPAddress]:
        """Our external IP per family, as last decided (families not decided yet are absent)."""
        return dict(self._decided)

    def address(self, family: Family) -> IPAddress | None:
        """Our decided external IP of ``family`` (4 or 6), or ``None``."""
        return self._decided.get(family)

    def statistics(self) -> ExternalIPStatistics:
        """A snapshot of the counters."""
        return ExternalIPStatistics(
            votes=self._votes,
            ignored_local=self._ignored_local,
            ignored_repeat=self._ignored_repeat,
            ignored_family=self._ignored_family,
            ignored_full=self._ignored_full,
            rounds=self._rounds_ended,
            changes=self._changes,
        )

    def pending(self) -> int:
        """Candidates counted in the rounds now, all families (at most ``max_candidates``
        each)."""
        return sum(len(r.candidates) for r in self._rounds.values())

    # -- voting ------------------------------------------------------------------------------

    def vote(
        self,
        reported: IPAddress | PeerAddress,
        voter: IPAddress | PeerAddress | None,
        *,
        source: VoteSource = VoteSource.PEER,
        now: float,
    ) -> IPAddress | None:
        """``voter`` says it sees us at ``reported``; the new address of that family if this
        vote changed the decision, else ``None``.

        ``voter`` is the voter's address (its port is ignored); ``None`` for a vote with no
        address of its own, such as the DHT's decided address or the gateway's (whose
        private LAN address would be ignored as a voter): such votes are one voter per
        source.

        Raises:
            TypeError: ``reported`` or ``voter`` is not an address; ``source`` not a
                :class:`VoteSource`.
        """
        host = _normalized(reported, "reported")
        if not isinstance(source, VoteSource):
            raise TypeError(f"source is a VoteSource, got {source!r}")
        key: _VoterKey
        if voter is None:
            key = source
        else:
            voter_host = _normalized(voter, "voter")
            if _family(voter_host) != _family(host):
                # A voter that reaches us over IPv4 cannot see our IPv6 address (libtorrent).
                self._ignored_family += 1
                return None
            if not self._acceptable(voter_host):
                self._ignored_local += 1
                return None
            key = host_network(voter_host)  # an IPv6 voter by its /64
        if not self._acceptable(host) or host.is_multicast or host.is_reserved:
            self._ignored_local += 1
            return None
        family = _family(host)
        changed = self._expire(family, now)
        current = self._rounds.get(family)
        if current is None:
            current = self._rounds[family] = _Round(now)
        if key in current.voters:
            self._ignored_repeat += 1
            return changed
        candidate = current.candidates.get(host)
        if candidate is None:
            if len(current.candidates) >= self._max_candidates:
                self._ignored_full += 1
                return changed
            candidate = current.candidates[host] = _Candidate(len(current.candidates))
        current.voters.add(key)
        candidate.weight += self._weights[source]
        candidate.voters += 1
        self._votes += 1
        if candidate.weight >= self._threshold and candidate.voters >= self._min_voters:
            return self._end_round(family, host) or changed
        if len(current.voters) >= self._max_voters:
            return self._end_round(family, self._leader(current)) or changed
        return changed

    def next_deadline(self) -> float | None:
        """When the oldest round times out, or ``None`` with no round open."""
        if not self._rounds:
            return None
        return min(r.started for r in self._rounds.values()) + self._round_timeout

    def handle_timer(self, now: float) -> dict[Family, IPAddress]:
        """End the rounds that timed out by ``now``; the families whose address changed,
        with the new one."""
        changes: dict[Family, IPAddress] = {}
        for family in list(self._rounds):
            changed = self._expire(family, now)
            if changed is not None:
                changes[family] = changed
        return changes

    # -- internals ---------------------------------------------------------------------------

    def _acceptable(self, host: IPAddress) -> bool:
        if host.is_unspecified:
            return False
        return self._accept_local or is_global_address(host)

    def _expire(self, family: Family, now: float) -> IPAddress | None:
        current = self._rounds.get(family)
        if current is None or now < current.started + self._round_timeout:
            return None
        return self._end_round(family, self._leader(current))

    def _leader(self, current: _Round) -> IPAddress | None:
        """The address a round that ran out decides: the heaviest, if enough voters named it
        and it outweighs the runner-up by half again (libtorrent's guard against flapping)."""
        ranked = sorted(current.candidates.items(), key=lambda kv: (-kv[1].weight, kv[1].order))
        if not ranked:
            return None
        host, top = ranked[0]
        if top.voters < self._min_voters:
            return None
        if len(ranked) > 1 and top.weight * 2 <= ranked[1][1].weight * 3:
            return None
        return host

    def _end_round(self, family: Family, winner: IPAddress | None) -> IPAddress | None:
        del self._rounds[family]
        self._rounds_ended += 1
        if winner is None or self._decided.get(family) == winner:
            return None
        self._decided[family] = winner
        self._changes += 1
        return winner
