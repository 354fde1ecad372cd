"""Choking: which interested peers we upload to, decided every rechoke interval.

API (sans-IO: time is ``now``, randomness from the injected ``random.Random``)::

    choker = Choker(rng=random.Random(seed))          # 4 regular slots + 1 optimistic
    choker.add_peer(peer, now)                         # PeerJoined
    choker.set_interested(peer, True, now)  -> ChokeDecision   # PeerInterested / NotInterested
    choker.set_snubbed(peer, True)                     # the queueing layer's verdict
    choker.downloaded(peer, nbytes, now)               # BlockReceived (tit-for-tat rate)
    choker.uploaded(peer, nbytes, now)                 # BlockSent (seeding rate, round robin)
    choker.remove_peer(peer, now)         -> ChokeDecision   # PeerLeft / DropPeer
    choker.seeding = True                              # we completed: seed ranking from now on
    choker.tick(now)                      -> ChokeDecision   # rechokes when due (every 10 s)
    choker.next_rechoke                                # when tick next does something

Every call that can change who is unchoked returns a :class:`ChokeDecision` (peers to choke,
peers to unchoke, in the order they joined); the brain maps them onto ``SendChoke`` /
``SendUnchoke``. The choker assumes each decision is carried out.

**Downloading** (BEP 3 reference behaviour, tit-for-tat): at every rechoke the interested,
non-snubbed peers that send to us fastest get the ``regular_slots`` (4); among peers sending
equally (all send nothing once our selected files are done) the seed ranking below decides,
as libtorrent's choker does for every torrent, so the slots still rotate. On top of those,
``optimistic_slots`` (1) go to interested peers regardless of rate, rotated every
``optimistic_interval`` (30 s); a peer that joined less than ``new_peer_window`` seconds ago is
``new_peer_weight`` (3) times as likely to be picked, as the reference client (which inserts
new connections near the front of its rotation) and libtorrent do, so newcomers get their first
pieces quickly. Snubbed peers can only get the optimistic slot, which is how they earn their way
back. BEP 3 counts the optimistic peer as one of the four; ``regular_slots=3`` reproduces that.

**Seeding** (download rates are all zero): ``SeedChoking.FASTEST_UPLOAD`` ranks by our upload
rate to each unchoked peer; ``SeedChoking.ROUND_ROBIN`` (libtorrent's default
``seed_choking_algorithm``) keeps the unchoked peers until each has had its share
(``round_robin_quota`` bytes and at least ``round_robin_min_time`` seconds unchoked), then
rotates the peers that waited longest in. A peer waits from its last unchoke or, never
unchoked, from when it joined (as libtorrent): a newcomer queues behind the peers already
waiting, so reconnecting does not jump the queue (the optimistic slot's new-peer weight still
starts newcomers quickly). Snubbing does not apply when seeding.

**Anti-fibrillation**: between rechokes nobody who still wants data is choked. Only a peer
leaving or losing interest changes anything: it is choked (if it lost interest) and its slot
goes at once to the best waiting peer; a peer that becomes interested while a slot is free is
unchoked at once. At a rechoke, peers sending us equally are ranked by the seed ranking (round
robin: the unchoked keep their slots until their share is done, or until they took nothing
for a whole interval).

Rates are moving sums over ``rate_window`` seconds (20 s, as the reference client) kept with
:class:`bip_peer.RateMeter`; the brain and the queueing layer may use that same class for their
own rates rather than a copy.

**Logging**: a rechoke that changes something is one DEBUG record of the logger
``bip_select.choking`` (who was choked and unchoked, who holds the optimistic slots): one
record per rechoke interval at most, plus nothing between rechokes.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from bip_peer import RateMeter

from ._errors import LocalProtocolError
from ._inputs import PeerKey

__all__ = [
    "DEFAULT_OPTIMISTIC_INTERVAL",
    "DEFAULT_RECHOKE_INTERVAL",
    "ChokeDecision",
    "Choker",
    "SeedChoking",
]

DEFAULT_RECHOKE_INTERVAL: Final = 10.0
"""Seconds between rechokes (BEP 3: choking only once every ten seconds prevents fibrillation)."""
DEFAULT_OPTIMISTIC_INTERVAL: Final = 30.0
"""Seconds an optimistic unchoke lasts before it rotates (BEP 3: every 30 seconds)."""

_log: Final = logging.getLogger("bip_select.choking")


class SeedChoking(Enum):
    """How a seed ranks the interested peers for its regular slots (libtorrent's names)."""

    FASTEST_UPLOAD = "fastest_upload"
    """Keep the peers we upload to fastest (the swarm's fastest spreaders)."""
    ROUND_ROBIN = "round_robin"
    """Give every interested peer its share in turn (libtorrent's default)."""


@dataclass(frozen=True, slots=True)
class ChokeDecision:
    """Who to choke and who to unchoke now, each in the order the peers joined.

    A peer never appears in both. An empty decision is falsy.

    >>> ChokeDecision(choke=(1,), unchoke=(2, 3))
    ChokeDecision(choke=(1,), unchoke=(2, 3))
    >>> bool(ChokeDecision())
    False
    """

    choke: tuple[PeerKey, ...] = ()
    unchoke: tuple[PeerKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.choke or self.unchoke)


_NO_CHANGE: Final = ChokeDecision()


class _Peer:
    """What the choker knows of one peer."""

    __slots__ = (
        "download",
        "interested",
        "joined_at",
        "key",
        "last_unchoke",
        "optimistic_since",
        "order",
        "snubbed",
        "turn_stamp",
        "unchoked",
        "upload",
        "uploaded_since_unchoke",
    )

    def __init__(self, key: PeerKey, order: int, stamp: int, now: float, window: float) -> None:
        self.key = key
        self.order = order  # join order: the order of a decision's peers
        self.joined_at = now
        self.interested = False
        self.snubbed = False
        self.unchoked = False
        # Set while the peer holds an optimistic slot: when it got it.
        self.optimistic_since: float | None = None
        # A newcomer's wait starts when it joins, as libtorrent's (``m_last_unchoke`` starts
        # at the connection's creation): counted as "never unchoked, waited longest", a peer
        # that reconnects each time it is choked would go before everyone who waited (and
        # the new-peer weight of the optimistic slot still starts a newcomer quickly).
        self.last_unchoke = now
        # Which came first of two peers whose ``last_unchoke`` is the same instant (joined,
        # or unchoked): the event count then (see Choker._stamp).
        self.turn_stamp = stamp
        self.uploaded_since_unchoke = 0
        self.download = RateMeter(window, now=now)
        self.upload = RateMeter(window, now=now)


class Choker:
    """Decides which peers we upload to (see the module docstring for the whole API).

    Args:
        rng: the randomness for optimistic unchokes.
        regular_slots: peers unchoked on merit (rate, or round-robin turn when seeding).
        optimistic_slots: peers unchoked regardless of rate, rotated.
        rechoke_interval: seconds between rechokes.
        optimistic_interval: seconds an optimistic unchoke lasts.
        new_peer_window: a peer this young (seconds since it joined) is "new".
        new_peer_weight: how many times likelier a new peer is to be picked as optimistic.
        seed_choking: the ranking used once :attr:`seeding` is set.
        round_robin_quota: bytes a peer is given before round robin rotates it out (libtorrent:
            ``seeding_piece_quota`` (20) pieces; pass ``20 * piece_length``).
        round_robin_min_time: seconds a peer stays unchoked at least under round robin.
        rate_window: seconds the rates are averaged over.

    Raises:
        LocalProtocolError: a slot count is negative, an interval or window is not positive, or
            the weight is below 1.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        regular_slots: int = 4,
        optimistic_slots: int = 1,
        rechoke_interval: float = DEFAULT_RECHOKE_INTERVAL,
        optimistic_interval: float = DEFAULT_OPTIMISTIC_INTERVAL,
        new_peer_window: float = 3 * DEFAULT_OPTIMISTIC_INTERVAL,
        new_peer_weight: float = 3.0,
        seed_choking: SeedChoking = SeedChoking.ROUND_ROBIN,
        round_robin_quota: int = 20 * 262144,
        round_robin_min_time: float = 60.0,
        rate_window: float = 20.0,
    ) -> None:
        for name, count in (
            ("regular_slots", regular_slots),
            ("optimistic_slots", optimistic_slots),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise LocalProtocolError(f"{name} must be an int >= 0, not {count!r}")
        for name, seconds in (
            ("rechoke_interval", rechoke_interval),
            ("optimistic_interval", optimistic_interval),
            ("rate_window", rate_window),
        ):
            if not (math.isfinite(seconds) and seconds > 0):
                raise LocalProtocolError(f"{name} must be positive and finite, not {seconds!r}")
        if not (math.isfinite(new_peer_window) and new_peer_window >= 0):
            raise LocalProtocolError(f"new_peer_window must be >= 0, not {new_peer_window!r}")
        if not (math.isfinite(new_peer_weight) and new_peer_weight >= 1):
            raise LocalProtocolError(f"new_peer_weight must be >= 1, not {new_peer_weight!r}")
        if round_robin_quota < 0 or not math.isfinite(round_robin_min_time):
            raise LocalProtocolError("the round-robin quota and time must be finite and >= 0")
        self._rng = rng
        self.regular_slots: Final = regular_slots
        self.optimistic_slots: Final = optimistic_slots
        self.rechoke_interval: Final = float(rechoke_interval)
        self.optimistic_interval: Final = float(optimistic_interval)
        self._new_peer_window = float(new_peer_window)
        self._new_peer_weight = float(new_peer_weight)
        self.seed_choking: SeedChoking = seed_choking
        self._rr_quota = round_robin_quota
        self._rr_min_time = float(round_robin_min_time)
        self._rate_window = float(rate_window)
        self.seeding = False
        """Rank as a seed (by upload) from the next rechoke on; the brain sets it on completion."""
        self._peers: dict[PeerKey, _Peer] = {}  # insertion order is join order
        # Counts joins and unchokes: at the same instant, between peers both waiting or both
        # unchoked, the one stamped first goes first (a reconnection follows the choke that
        # caused it), as libtorrent's distinct timestamps would order them. A waiting peer
        # still goes before an idle unchoked one of the same instant (the ranking's
        # ``unchoked`` key): it yields its slot to one that waited.
        self._stamp = 0
        self._regular: set[PeerKey] = set()
        self._optimistic: set[PeerKey] = set()
        self._next_rechoke: float | None = None

    # ---------------------------------------------------------------- queries

    @property
    def unchoked(self) -> frozenset[PeerKey]:
        """Every peer we currently unchoke (regular and optimistic)."""
        return frozenset(self._regular | self._optimistic)

    @property
    def optimistic(self) -> frozenset[PeerKey]:
        """The peers holding optimistic slots."""
        return frozenset(self._optimistic)

    @property
    def next_rechoke(self) -> float | None:
        """When :meth:`tick` next rechokes (``None``: at the first tick)."""
        return self._next_rechoke

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def is_unchoked(self, peer: PeerKey) -> bool:
        """Whether we unchoke ``peer``.

        Raises:
            LocalProtocolError: ``peer`` was never added.
        """
        return self._get(peer).unchoked

    def download_rate(self, peer: PeerKey, now: float) -> float:
        """Bytes per second ``peer`` sent us over the rate window ending at ``now``."""
        return self._get(peer).download.rate(now)

    def upload_rate(self, peer: PeerKey, now: float) -> float:
        """Bytes per second we sent ``peer`` over the rate window ending at ``now``."""
        return self._get(peer).upload.rate(now)

    # ---------------------------------------------------------------- events

    def add_peer(self, peer: PeerKey, now: float) -> None:
        """A connection to ``peer`` is up; it starts choked and not interested.

        Raises:
            LocalProtocolError: ``peer`` is already known.
        """
        try:
            known = peer in self._peers
        except TypeError:
            raise LocalProtocolError(f"a peer key is hashable, not {peer!r}") from None
        if known:
            raise LocalProtocolError(f"peer {peer!r} was already added to the choker")
        # Its join's stamp is its join order too: stamps only grow.
        self._peers[peer] = _Peer(peer, self._stamp, self._stamp, now, self._rate_window)
        self._stamp += 1

    def remove_peer(self, peer: PeerKey, now: float) -> ChokeDecision:
        """``peer`` is gone: its slot goes to the best waiting peer (returned to unchoke).

        Raises:
            LocalProtocolError: ``peer`` was never added.
        """
        record = self._get(peer)
        del self._peers[peer]
        if not record.unchoked:
            return _NO_CHANGE
        self._regular.discard(peer)
        self._optimistic.discard(peer)
        return ChokeDecision(unchoke=self._fill_free_slots(now))

    def set_interested(self, peer: PeerKey, interested: bool, now: float) -> ChokeDecision:
        """``peer`` told us it is (or no longer is) interested in our pieces.

        A newly interested peer takes a free slot at once; a peer that lost interest is choked
        and its slot refilled at once. Nothing else moves between rechokes.

        Raises:
            LocalProtocolError: ``peer`` was never added.
        """
        record = self._get(peer)
        if record.interested == interested:
            return _NO_CHANGE
        record.interested = interested
        if interested:
            return ChokeDecision(unchoke=self._fill_free_slots(now))
        if not record.unchoked:
            return _NO_CHANGE
        self._choke(record)
        return ChokeDecision(choke=(peer,), unchoke=self._fill_free_slots(now))

    def set_snubbed(self, peer: PeerKey, snubbed: bool) -> None:
        """The queueing layer's verdict: ``peer`` stopped sending us what we requested.

        Takes effect at the next rechoke (a snubbed peer keeps its slot until then).

        Raises:
            LocalProtocolError: ``peer`` was never added.
        """
        self._get(peer).snubbed = snubbed

    def downloaded(self, peer: PeerKey, nbytes: int, now: float) -> None:
        """``peer`` sent us ``nbytes`` of payload (its tit-for-tat score).

        Raises:
            LocalProtocolError: ``peer`` was never added, or ``nbytes`` is negative.
        """
        self._meter_add(self._get(peer).download, nbytes, now)

    def uploaded(self, peer: PeerKey, nbytes: int, now: float) -> None:
        """We sent ``peer`` ``nbytes`` of payload (the seeding rank, the round-robin share).

        Raises:
            LocalProtocolError: ``peer`` was never added, or ``nbytes`` is negative.
        """
        record = self._get(peer)
        self._meter_add(record.upload, nbytes, now)
        record.uploaded_since_unchoke += nbytes

    def tick(self, now: float) -> ChokeDecision:
        """Rechoke if the interval has passed (or at the first tick); else no change."""
        if self._next_rechoke is not None and now < self._next_rechoke:
            return _NO_CHANGE
        return self.rechoke(now)

    def rechoke(self, now: float) -> ChokeDecision:
        """Rank every peer now and hand out the slots; the next rechoke is one interval later.

        The regular slots go to the best-ranked interested peers (tit-for-tat on download rate,
        or the seed ranking); the optimistic slots stay with their holders until they expire,
        then go to other interested peers at random, new peers weighted up.
        """
        self._next_rechoke = now + self.rechoke_interval
        ranked = self._rank(self._regular_candidates(), now)
        regular = {record.key for record in ranked[: self.regular_slots]}
        optimistic: set[PeerKey] = set()
        expired: list[_Peer] = []
        for key in self._optimistic:
            record = self._peers[key]
            if key in regular or not record.interested:
                continue
            since = record.optimistic_since
            if since is not None and now - since < self.optimistic_interval:
                optimistic.add(key)
            else:
                expired.append(record)
        candidates = [
            record
            for record in self._peers.values()
            if record.interested and record.key not in regular and record.key not in optimistic
        ]
        rotated_out = {record.key for record in expired}
        fresh = [record for record in candidates if record.key not in rotated_out]
        # Rotation prefers someone else; a lone candidate keeps its slot for another round.
        picks = self._pick_optimistic(fresh, self.optimistic_slots - len(optimistic), now)
        optimistic.update(picks)
        remaining = self.optimistic_slots - len(optimistic)
        if remaining > 0:
            leftovers = [record for record in candidates if record.key not in optimistic]
            optimistic.update(self._pick_optimistic(leftovers, remaining, now))

        choke: list[PeerKey] = []
        unchoke: list[PeerKey] = []
        for record in self._peers.values():
            key = record.key
            is_regular = key in regular
            is_optimistic = key in optimistic
            if is_optimistic and (key not in self._optimistic or key in rotated_out):
                record.optimistic_since = now  # a new turn (or a lone candidate's renewed one)
            elif not is_optimistic:
                record.optimistic_since = None
            if is_regular or is_optimistic:
                if not record.unchoked:
                    self._unchoke(record, now)
                    unchoke.append(key)
            elif record.unchoked:
                self._choke(record)
                choke.append(key)
        self._regular = regular
        self._optimistic = optimistic
        if (choke or unchoke) and _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rechoke (%s): unchoked %s; choked %s; %d regular and %d optimistic slots "
                "held (optimistic: %s) among %d interested of %d peers",
                "seeding" if self.seeding else "downloading",
                _keys(unchoke),
                _keys(choke),
                len(regular),
                len(optimistic),
                _keys(optimistic),
                sum(1 for record in self._peers.values() if record.interested),
                len(self._peers),
            )
        return ChokeDecision(choke=tuple(choke), unchoke=tuple(unchoke))

    # ---------------------------------------------------------------- internals

    def _get(self, peer: PeerKey) -> _Peer:
        try:
            return self._peers[peer]
        except (KeyError, TypeError):  # TypeError: an unhashable key was never added either
            raise LocalProtocolError(f"peer {peer!r} was never added to the choker") from None

    @staticmethod
    def _meter_add(meter: RateMeter, nbytes: int, now: float) -> None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise LocalProtocolError(f"a byte count is an int >= 0, not {nbytes!r}")
        meter.add(nbytes, now)

    def _unchoke(self, record: _Peer, now: float) -> None:
        record.unchoked = True
        record.last_unchoke = now
        record.turn_stamp = self._stamp
        self._stamp += 1
        record.uploaded_since_unchoke = 0

    def _choke(self, record: _Peer) -> None:
        record.unchoked = False
        record.optimistic_since = None
        self._regular.discard(record.key)
        self._optimistic.discard(record.key)

    def _regular_candidates(self) -> list[_Peer]:
        """Interested peers that may hold a regular slot (snubbed ones only while seeding)."""
        seeding = self.seeding
        return [
            record
            for record in self._peers.values()
            if record.interested and (seeding or not record.snubbed)
        ]

    def _rank(self, records: Iterable[_Peer], now: float) -> list[_Peer]:
        """``records`` best first under the current mode's ranking.

        Downloading, the fastest senders to us come first (tit-for-tat); among equal senders
        the seed ranking decides, as libtorrent's ``unchoke_compare_rr`` does for every torrent
        after ``downloaded_in_last_round``. Without that tie-break a torrent whose peers send
        it nothing (done with its selected files, or nothing it wants) would keep the same
        peers unchoked for ever. Seeding, download rates (the last pieces' residue) are
        ignored.
        """

        # A choked peer's rate is what was still in flight when it was choked: count zero so
        # it does not jump the queue on that residue. A peer unchoked less than a rechoke ago
        # has had no time to show a rate and keeps its slot; one that had the time and took
        # nothing yields it to whoever waited longest (libtorrent's order): since its last
        # unchoke, or since it joined. Of the same instant, a waiting peer goes before an
        # idle unchoked one, then whichever came first (see _stamp).
        def uploading(r: _Peer) -> float:
            return r.upload.rate(now) if r.unchoked else 0.0

        def settling(r: _Peer) -> bool:
            return r.unchoked and now - r.last_unchoke < self.rechoke_interval

        def sending_rank(r: _Peer) -> float:
            return 0.0 if self.seeding else -r.download.rate(now)

        if self.seed_choking is SeedChoking.FASTEST_UPLOAD:
            return sorted(
                records,
                key=lambda r: (
                    sending_rank(r),
                    -uploading(r),
                    not settling(r),
                    r.last_unchoke,
                    r.unchoked,
                    r.turn_stamp,
                ),
            )
        return sorted(
            records,
            key=lambda r: (
                sending_rank(r),
                self._share_done(r, now),
                -uploading(r),
                not settling(r),
                r.last_unchoke,
                r.unchoked,
                r.turn_stamp,
            ),
        )

    def _share_done(self, record: _Peer, now: float) -> bool:
        """Round robin: an unchoked peer that got its quota, for long enough, yields its slot."""
        return (
            record.unchoked
            and record.uploaded_since_unchoke >= self._rr_quota
            and now - record.last_unchoke >= self._rr_min_time
        )

    def _pick_optimistic(self, records: list[_Peer], count: int, now: float) -> list[PeerKey]:
        """Up to ``count`` distinct peers drawn at random, new peers weighted up."""
        picks: list[PeerKey] = []
        pool = list(records)
        while count > 0 and pool:
            weights = [
                self._new_peer_weight if now - r.joined_at < self._new_peer_window else 1.0
                for r in pool
            ]
            target = self._rng.random() * sum(weights)
            chosen = len(pool) - 1
            for index, weight in enumerate(weights):
                target -= weight
                if target < 0:
                    chosen = index
                    break
            picks.append(pool.pop(chosen).key)
            count -= 1
        return picks

    def _fill_free_slots(self, now: float) -> tuple[PeerKey, ...]:
        """Give free slots to waiting interested peers at once (filling is not churn)."""
        unchoke: list[PeerKey] = []
        free_regular = self.regular_slots - len(self._regular)
        if free_regular > 0:
            waiting = [r for r in self._regular_candidates() if not r.unchoked]
            for record in self._rank(waiting, now)[:free_regular]:
                self._unchoke(record, now)
                self._regular.add(record.key)
                unchoke.append(record.key)
        free_optimistic = self.optimistic_slots - len(self._optimistic)
        if free_optimistic > 0:
            waiting = [r for r in self._peers.values() if r.interested and not r.unchoked]
            for key in self._pick_optimistic(waiting, free_optimistic, now):
                record = self._peers[key]
                self._unchoke(record, now)
                record.optimistic_since = now
                self._optimistic.add(key)
                unchoke.append(key)
        order = {key: self._peers[key].order for key in unchoke}
        return tuple(sorted(unchoke, key=order.__getitem__))


def _keys(peers: Iterable[PeerKey], shown: int = 8) -> str:
    """Peers for a log record: ``"a, b"``, at most ``shown`` of them then ``"..."``."""
    listed = [str(peer) for peer in peers]
    if not listed:
        return "none"
    text = ", ".join(listed[:shown])
    return f"{text}, ... ({len(listed)})" if len(listed) > shown else text
