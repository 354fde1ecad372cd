"""The swarm brain: one object a client feeds what happened and asks what to do.

:class:`SwarmBrain` composes the strategies of this package for one torrent:

- a piece selection strategy (:class:`~bip_select.RarestFirst` by default; any
  :class:`~bip_select.Strategy`, nested as ``RandomFirst(then=RarestFirst())`` or
  ``Streaming(then=Sequential())``), driving a :class:`~bip_select.PiecePicker` that keeps the
  availability counts and the block-level request book (end-game included);
- the request queueing policy (:class:`~bip_select.PeerQueues`: queue depth from each peer's
  measured rate, timeouts, snubbing, trust and bans);
- a :class:`~bip_select.Choker` (tit-for-tat with optimistic unchoke, equal senders ranked by
  the seed ranking; upload-rate or round robin once we seed, a turn being 20 pieces);
- a revelation strategy (:class:`~bip_select.HonestRevelation` by default,
  :class:`~bip_select.LazyBitfield`, :class:`~bip_select.SuperSeeding`).

Each can be replaced by the caller (mix and match); the brain only routes inputs to them and
turns their decisions into :mod:`actions <bip_select._actions>`. It is sans-IO: time is the
``now`` argument, randomness the injected ``random.Random``.

The strategy and the piece deadlines can change at any time, cheaply:
:class:`~bip_select.StrategyChanged` switches the selection strategy (the pending deadlines carry
over), :class:`~bip_select.PieceDeadlineSet`, :class:`~bip_select.PieceDeadlineCleared` and
:class:`~bip_select.PieceDeadlinesCleared` set and clear deadlines one at a time (libtorrent's
``set_sequential_download``, ``set_piece_deadline``, ``reset_piece_deadline`` and
``clear_piece_deadlines``). A strategy without a :class:`~bip_select.Streaming` layer gets one
from the brain when the first deadline comes, and loses it when every deadline is cleared: peers'
rates are measured for the picker only while a ``Streaming`` layer needs them. The revelation
strategy is switched with :meth:`SwarmBrain.set_revelation` (libtorrent's super-seeding flag,
set or cleared at run time): the connected peers are handed over with what they were told, and
:meth:`SwarmBrain.may_upload` says which of a peer's requests may be served (while
super-seeding, only those for the pieces revealed to it).

How a client drives it::

    actions = brain.handle(PeerJoined(peer, reqq=250, fast=True), now)
    ...                                     # every peer event, block and hash verdict
    if brain.next_deadline() is not None and now >= brain.next_deadline():
        actions = brain.tick(now)           # timers: rechoke, timeouts, refills

and carries out the returned actions in order.

Requests are batched: a peer is topped up when its room reaches a quarter of its desired queue
depth (or it has nothing left in flight), not after every block, which keeps the number of
picker calls per block low without letting the pipe run dry (the queue holds seconds of data).
A have of a wanted piece from a peer that unchokes us (or that chokes us and allows that piece
fast, BEP 6) tops it up at once by the same rule, so a peer that had nothing more for us is
asked for its new piece without waiting for the periodic refill; so are the peers whose
requests were cancelled because their piece was verified meanwhile (say, from a web seed;
only those peers, each once). The peers that lose an end-game race for a block are not: their
next block or the refill tops them up (asked at once, they lengthened the simulator's end-game
tail). In end-game a peer that ran dry (fewer requests out than the picker's
``endgame_depth``) takes a duplicate when its own block arrives, as libtorrent asks for a busy
block only for the peer it tops up; the idle peers get theirs once, in the step end-game
begins, and at the refills: no pass over every peer per block received. A deadline piece,
newly set, wanted again (hashed bad, discarded, lost) or announced in a have, is offered at
once to the peers that have it, whatever room they have.

A client that stores blocks before telling the brain (:class:`~bip_select.BlockReceived`
after the disk write) feeds :class:`~bip_select.BlockArrived` as each block comes off the
wire: a slow disk then holds up no peer's clock (no snub, no timed-out or cancelled request
for a peer whose block waits for our disk; an arrival ends a snub, and a choke keeps such a
block asked of its peer; nor is it duplicated in end-game or for a deadline), as libtorrent
counts a block when it arrives and never asks again for one being written; a block the client
drops itself goes back with :class:`~bip_select.BlockDropped`, which blames nobody.

Logging: the brain is a sans-IO core, so it logs at DEBUG only, under ``bip_select.brain``, and
only its own decisions a log reader cannot see in the actions: end-game entered, a peer banned
or dropped (and why: the client carrying out the :class:`~bip_select.DropPeer` logs the drop
itself), a peer snubbing us or no longer, a piece failed, discarded or lost, every wanted piece
verified. Nothing is logged per block or per message.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._actions import (
    REASON_BAD_DATA,
    REASON_SNUBBED,
    Action,
    DropPeer,
    SendAllowedFast,
    SendCancel,
    SendChoke,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SendUnchoke,
)
from ._choking import ChokeDecision, Choker
from ._errors import LocalProtocolError
from ._geometry import Block, TorrentGeometry
from ._inputs import (
    AllowedFast,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockRejected,
    BlockSent,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerKey,
    PeerLeft,
    PeerNotInterested,
    PeerUnchokedUs,
    PeerUploadOnly,
    PieceDeadlineCleared,
    PieceDeadlinesCleared,
    PieceDeadlineSet,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    PrioritiesChanged,
    RequestTimedOut,
    StrategyChanged,
    Tick,
)
from ._queueing import PeerQueues, QueueConfig
from ._revelation import HonestRevelation, RevelationStrategy, SuperSeeding
from ._selection import (
    MAX_ALLOWED_FAST,
    PiecePicker,
    RarestFirst,
    Strategy,
    Streaming,
    _check_priority,
    streaming_layers,
)

__all__ = [
    "DEFAULT_REFILL_INTERVAL",
    "REASON_BANNED",
    "BrainStatistics",
    "SwarmBrain",
]

DEFAULT_REFILL_INTERVAL: Final = 1.0
"""Seconds between the brain's periodic passes over every peer (rates, late deadline pieces,
end-game duplicates for idle peers); :meth:`SwarmBrain.tick` is due at least this often."""

REASON_BANNED: Final = "banned"
"""The :attr:`~bip_select.DropPeer.reason` given to a peer that was banned earlier and joined
again (the client should not have let it in)."""

_MAX_BANNED: Final = 65536  # bans remembered: a bound on what bad peers can make us keep
_ROUND_ROBIN_PIECES: Final = 20  # a round-robin turn, in pieces (libtorrent's seeding_piece_quota)
_log: Final = logging.getLogger("bip_select.brain")


@dataclass(frozen=True, slots=True)
class BrainStatistics:
    """A snapshot of the brain's state (see :meth:`SwarmBrain.statistics`)."""

    peers: int
    """Connected peers."""
    interested: int
    """Peers we are interested in."""
    unchoked_by: int
    """Peers that unchoke us."""
    unchoked: int
    """Peers we unchoke."""
    outstanding_requests: int
    """Block requests in flight."""
    have: int
    """Pieces we have (verified)."""
    wanted: int
    """Pieces still to download."""
    endgame: bool
    """Whether every remaining block is requested (duplicates allowed)."""
    banned: int
    """Peers banned for bad data."""


class _PeerState:
    """What the brain itself keeps per peer (the strategies keep the rest)."""

    __slots__ = (
        "allowed_fast",
        "choking_us",
        "fast",
        "interested",
        "offer",
        "rate_zeroed",
        "snubbed_since",
        "starved",
        "upload_only",
        "wanted",
    )

    def __init__(self, fast: bool, upload_only: bool, offer: tuple[int, ...]) -> None:
        self.fast = fast
        self.upload_only = upload_only
        # The allowed-fast pieces we grant it at its first interest (BEP 6); () once sent.
        self.offer = offer
        self.choking_us = True  # every connection starts choked (BEP 3)
        self.allowed_fast = False  # it granted us allowed-fast pieces (BEP 6)
        self.interested = False  # are we interested in it
        self.wanted = 0  # pieces it has that we want: interest is wanted > 0
        self.snubbed_since: float | None = None
        # The picker was given rate 0 for it as idle (choking us, nothing allowed fast): its
        # rate is given again as soon as it is not (see SwarmBrain._set_rate).
        self.rate_zeroed = False
        # The brain's epoch when the picker last had nothing more for this peer: no point
        # asking again until blocks are freed (a new epoch) or the peer has something new.
        self.starved = -1


class SwarmBrain:
    """The swarm brain of one torrent (see the module docstring).

    Args:
        geometry: the torrent's pieces and blocks.
        rng: every random choice (tie-breaking, optimistic unchokes) comes from it.
        have: pieces already verified (a seed passes every piece).
        selection: the piece selection strategy (default :class:`~bip_select.RarestFirst`);
            switched later with :class:`~bip_select.StrategyChanged`.
        queueing: the request queueing policy: a :class:`~bip_select.QueueConfig` or a fresh
            :class:`~bip_select.PeerQueues` (default: libtorrent's knobs).
        choker: the choker (default ``Choker(rng=rng, round_robin_quota=20 *
            geometry.piece_length)``: 4 regular slots, 1 optimistic, a round-robin turn of
            20 pieces as libtorrent's ``seeding_piece_quota``).
        revelation: the revelation strategy, built for the same ``have`` (default
            :class:`~bip_select.HonestRevelation`).
        piece_priorities: one priority per piece (0 = do not download, 1..7, 4 default).
        refill_interval: seconds between periodic passes (see :data:`DEFAULT_REFILL_INTERVAL`).
        drop_snubbed_after: drop a peer that stayed snubbed this long (``None``: never; a
            snubbed peer keeps one request and only the optimistic slot).

    Raises:
        LocalProtocolError: a piece in ``have`` or a priority is outside the torrent, or the
            revelation strategy was built for other pieces.
    """

    def __init__(
        self,
        geometry: TorrentGeometry,
        *,
        rng: random.Random,
        have: Iterable[int] = (),
        selection: Strategy | None = None,
        queueing: QueueConfig | PeerQueues | None = None,
        choker: Choker | None = None,
        revelation: RevelationStrategy | None = None,
        piece_priorities: Sequence[int] | None = None,
        refill_interval: float = DEFAULT_REFILL_INTERVAL,
        drop_snubbed_after: float | None = None,
    ) -> None:
        have_set = frozenset(have)
        for piece in have_set:
            geometry.check_piece(piece)
        if not refill_interval > 0:
            raise LocalProtocolError(f"refill_interval must be positive, not {refill_interval!r}")
        self.geometry: Final = geometry
        self._rng = rng
        self.picker: Final = PiecePicker(
            geometry,
            rng,
            selection if selection is not None else RarestFirst(),
            have=have_set,
            priorities=list(piece_priorities) if piece_priorities is not None else None,
        )
        """The piece picker: availability, the request book and the selection strategy."""
        self.queues: Final = queueing if isinstance(queueing, PeerQueues) else PeerQueues(queueing)
        """The request queueing policy: depths, timeouts, snubs, trust and bans."""
        if choker is None:
            # The round-robin share is counted in pieces (libtorrent: piece_length times
            # seeding_piece_quota): a fixed byte count would rotate a peer out of a torrent
            # with big pieces before it got one whole piece to trade.
            choker = Choker(rng=rng, round_robin_quota=_ROUND_ROBIN_PIECES * geometry.piece_length)
        self.choker: Final = choker
        if revelation is None:
            revelation = HonestRevelation(geometry.num_pieces, have=have_set)
        elif revelation.num_pieces != geometry.num_pieces or revelation.have != have_set:
            raise LocalProtocolError("the revelation strategy was built for other pieces")
        self._revelation = revelation
        self._refill_interval = float(refill_interval)
        self._drop_snubbed_after = drop_snubbed_after
        self._peers: dict[PeerKey, _PeerState] = {}
        self._banned: set[PeerKey] = set()
        self._next_refill: float | None = None
        self._epoch = 0  # bumped whenever blocks may have become requestable again
        self._endgame = False  # end-game entered and logged (it is left when pieces free up)
        # End-game just began: the idle peers are given duplicates once the step is done
        # (_spread_endgame), whichever step began it.
        self._spread_due = False
        self._deadline: float | None = None
        self.choker.seeding = self.is_seed
        # Deadline pieces go to peers that could be asked for them (PiecePicker.askable).
        self.picker.askable = self._askable
        self.picker.chokes_us = self._choking_us
        # The Streaming layer the brain put around the user's strategy for deadlines (None:
        # none, or the strategy has its own); taken off again when every deadline is cleared.
        self._own_streaming: Streaming | None = None
        self._drop_stale_deadlines()
        self._handlers: dict[type[Input], Callable[[Any, float], list[Action]]] = {
            PeerJoined: self._joined,
            PeerLeft: self._left,
            PeerBitfield: self._bitfield,
            PeerHave: self._peer_have,
            PeerHaveAll: self._have_all,
            PeerHaveNone: self._have_none,
            PeerDontHave: self._dont_have,
            PeerChokedUs: self._choked_us,
            PeerUnchokedUs: self._unchoked_us,
            PeerInterested: self._interested,
            PeerNotInterested: self._not_interested,
            AllowedFast: self._allowed_fast,
            BlockArrived: self._block_arrived,
            BlockReceived: self._block_received,
            BlockDropped: self._block_dropped,
            BlockRejected: self._block_rejected,
            RequestTimedOut: self._request_timed_out,
            BlockSent: self._block_sent,
            PieceVerified: self._piece_verified,
            PieceLost: self._piece_lost,
            PieceDiscarded: self._piece_discarded,
            PeerUploadOnly: self._upload_only,
            PrioritiesChanged: self._priorities_changed,
            StrategyChanged: self._strategy_changed,
            PieceDeadlineSet: self._deadline_set,
            PieceDeadlineCleared: self._deadline_cleared,
            PieceDeadlinesCleared: self._deadlines_cleared,
            Tick: lambda _input, now: self.tick(now),
        }

    # ---------------------------------------------------------------- queries

    @property
    def is_seed(self) -> bool:
        """Whether we have every piece."""
        return self.picker.requests.num_have == self.geometry.num_pieces

    @property
    def is_complete(self) -> bool:
        """Whether we have every piece we want (every piece, or the chosen files')."""
        return self.picker.is_complete()

    def has_piece(self, piece: int) -> bool:
        """Whether we have ``piece`` (verified)."""
        return self.picker.requests.have(piece)

    @property
    def num_have(self) -> int:
        """How many pieces we have."""
        return self.picker.requests.num_have

    @property
    def peers(self) -> frozenset[PeerKey]:
        """The connected peers."""
        return frozenset(self._peers)

    def is_interested(self, peer: PeerKey) -> bool:
        """Whether we told ``peer`` we are interested."""
        return self._peer(peer).interested

    def is_upload_only(self, peer: PeerKey) -> bool:
        """Whether ``peer`` said it only uploads (BEP 21), as of its latest word.

        Raises:
            LocalProtocolError: ``peer`` is not connected.
        """
        return self._peer(peer).upload_only

    def is_banned(self, peer: PeerKey) -> bool:
        """Whether ``peer`` was dropped for bad data (never, for a key that is not hashable)."""
        try:
            return peer in self._banned
        except TypeError:
            return False

    @property
    def revelation(self) -> RevelationStrategy:
        """The revelation strategy in use (switched with :meth:`set_revelation`)."""
        return self._revelation

    def may_upload(self, peer: PeerKey, piece: int) -> bool:
        """Whether a request of ``peer`` for a block of ``piece`` may be served: we have the
        piece, and the revelation strategy told ``peer`` so.

        While super-seeding (:class:`~bip_select.SuperSeeding`) a peer may only take the
        pieces revealed to it, as libtorrent refuses the others ("piece not superseeded"):
        asking for one we pose not to have is the peer's way around BEP 16. A piece lost
        from storage since it was announced cannot be served either. The client refuses
        such a request: a reject (BEP 6) to a peer that speaks the fast extension, nothing
        to the others (BEP 3). Whether we choke the peer is the connection's business. A
        piece outside the torrent (the peer's nonsense) is refused too. O(1).

        Raises:
            LocalProtocolError: ``peer`` is not connected.
        """
        self._peer(peer)
        if type(piece) is not int or not 0 <= piece < self.geometry.num_pieces:
            return False
        return self.picker.requests.have(piece) and self._revelation.was_revealed(peer, piece)

    def set_revelation(self, strategy: RevelationStrategy, now: float) -> list[Action]:
        """Switch the revelation strategy at ``now`` (libtorrent's super-seeding flag set or
        cleared on a running torrent); returns what to send, in order.

        ``strategy`` is fresh (no peer joined it) and built for the torrent's pieces and the
        pieces we have now (:attr:`revelation`'s ``have``). It takes over every connected
        peer, in join order, through :meth:`RevelationStrategy.adopt
        <bip_select.RevelationStrategy.adopt>`: with what the peer has (the picker's
        availability) and what it was told so far, which stays told. So a switch from
        :class:`~bip_select.SuperSeeding` to an honest strategy tells each peer the pieces
        it was not told, as haves (never a second bitfield), paced over the next
        :meth:`tick` calls; a switch to super-seeding leaves the peers told everything as
        they are, and super-seeds the peers that join from now on.

        Raises:
            LocalProtocolError: ``strategy`` is not a revelation strategy, was built for
                other pieces, or has peers already. Nothing changed then.
        """
        if not isinstance(strategy, RevelationStrategy):
            raise LocalProtocolError(f"{strategy!r} is not a revelation strategy")
        old = self._revelation
        if strategy is old:
            return []
        if strategy.num_pieces != self.geometry.num_pieces or strategy.have != old.have:
            raise LocalProtocolError("the revelation strategy was built for other pieces")
        if strategy.peers:
            raise LocalProtocolError("the revelation strategy has peers already")
        availability = self.picker.availability
        actions: list[Action] = []
        for peer, state in self._peers.items():
            seed = availability.is_seed(peer)
            actions.extend(
                strategy.adopt(
                    peer,
                    now,
                    fast=state.fast,
                    pieces=() if seed else availability.peer_pieces(peer),
                    seed=seed,
                    revealed=old.revealed(peer),
                )
            )
        self._revelation = strategy
        self._pull_deadline(strategy.next_deadline())
        return actions

    @property
    def strategy(self) -> Strategy:
        """The piece selection strategy in use (with the brain's own
        :class:`~bip_select.Streaming` layer around it while deadlines need one)."""
        return self.picker.strategy

    def deadlines(self) -> Mapping[int, float]:
        """Every pending piece deadline (piece -> when): a copy, from every
        :class:`~bip_select.Streaming` layer of the strategy. Where two layers hold one for
        the same piece, the outermost layer's is given: the one the picker goes by
        (:meth:`Streaming.deadline <bip_select.Streaming.deadline>` looks outside in)."""
        found: dict[int, float] = {}
        for streaming in streaming_layers(self.picker.strategy):
            for piece, when in streaming.deadlines().items():
                found.setdefault(piece, when)  # an outer layer's came first: it wins
        return found

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work (``None``: not before an input arrives).

        Calling :meth:`tick` earlier or more often is harmless.
        """
        return self._deadline

    def statistics(self) -> BrainStatistics:
        """A frozen snapshot of the brain's state."""
        requests = self.picker.requests
        return BrainStatistics(
            peers=len(self._peers),
            interested=sum(1 for s in self._peers.values() if s.interested),
            unchoked_by=sum(1 for s in self._peers.values() if not s.choking_us),
            unchoked=len(self.choker.unchoked),
            outstanding_requests=sum(requests.num_outstanding(p) for p in self._peers),
            have=requests.num_have,
            wanted=self.picker.availability.num_wanted,
            endgame=self.picker.in_endgame(),
            banned=len(self._banned),
        )

    # ---------------------------------------------------------------- driving

    def handle(self, event: Input, now: float) -> list[Action]:
        """Take in what happened at ``now``; returns what to do, in order.

        Raises:
            LocalProtocolError: the input is about a peer that never joined (or one the brain
                dropped), or is not an input at all. Nothing changed then.
        """
        handler = self._handlers.get(type(event))
        if handler is None:
            raise LocalProtocolError(f"{event!r} is not a brain input")
        # A first Tick sets its own deadline (tick() does); any other first input makes
        # the first tick due at once.
        first = self._deadline is None and type(event) is not Tick
        actions = handler(event, now)
        if first:
            # The first tick hands out the unchoke slots: due once an input is taken, not
            # when one is refused (a refused input changes nothing).
            pulled = self._deadline
            self._deadline = now if pulled is None else min(pulled, now)
        if self._spread_due:
            actions = list(actions)  # a handler may return a strategy's own list
            self._spread_endgame(now, actions)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Run the timers at ``now``: rechoke, request timeouts and snubs, delayed haves,
        rates, late deadline pieces and refills. Returns what to do, in order."""
        actions: list[Action] = []
        self._choke_actions(self.choker.tick(now), actions)
        picker = self.picker
        queues = self.queues
        freed = False
        for peer, block in queues.expired(picker.requests, now):
            if picker.block_timed_out(peer, block, now):
                actions.append(SendCancel(peer, block))
                freed = True
        # The picker wants rates for deadline decisions only: spare the arithmetic otherwise
        # (the strategy is looked up afresh: it may have been switched since the last tick).
        streaming = self._streaming() is not None
        is_snubbed = self.queues.is_snubbed
        for peer, state in list(self._peers.items()):
            # Most peers neither snub us nor did: _sync_snub's first test, made here.
            if state.snubbed_since is None and not is_snubbed(peer):
                dropped = False
            else:
                dropped = self._sync_snub(peer, state, now, actions)
            if not dropped and streaming:
                self._set_rate(peer, state, now)
        actions.extend(self._revelation.tick(now))
        if freed or self._next_refill is None or now >= self._next_refill:
            self._next_refill = now + self._refill_interval
            self._epoch += 1  # time moved: deadlines may be late, rates changed
            self._fill_all(now, actions)
        if self._spread_due:
            self._spread_endgame(now, actions)
        self._update_deadline(now)
        return actions

    # ---------------------------------------------------------------- internals

    def _peer(self, peer: PeerKey) -> _PeerState:
        try:
            return self._peers[peer]
        except (KeyError, TypeError):
            raise LocalProtocolError(f"peer {peer!r} never joined (or was dropped)") from None

    def _set_rate(self, peer: PeerKey, state: _PeerState, now: float) -> None:
        """Give the picker ``peer``'s download rate, for deadline decisions."""
        # Not for peers that choke us: they send nothing (the last rate given decays to 0
        # at the next refresh after an unchoke).
        idle = state.choking_us and not state.allowed_fast
        state.rate_zeroed = idle
        self.picker.set_rate(peer, 0.0 if idle else self.queues.download_rate(peer, now))

    def _update_deadline(self, now: float) -> None:
        candidates = [self._next_refill]
        rechoke = self.choker.next_rechoke
        candidates.append(now if rechoke is None else rechoke)
        candidates.append(self.queues.next_deadline(self.picker.requests))
        candidates.append(self._revelation.next_deadline())
        self._deadline = min((c for c in candidates if c is not None), default=None)

    def _choke_actions(self, decision: ChokeDecision, actions: list[Action]) -> None:
        if decision:
            actions.extend(SendChoke(peer) for peer in decision.choke)
            actions.extend(SendUnchoke(peer) for peer in decision.unchoke)

    def _set_interest(self, peer: PeerKey, state: _PeerState, actions: list[Action]) -> None:
        want = state.wanted > 0
        if want != state.interested:
            state.interested = want
            actions.append(SendInterested(peer) if want else SendNotInterested(peer))

    def _recount_wanted(self, peer: PeerKey, state: _PeerState) -> None:
        availability = self.picker.availability
        if availability.is_seed(peer):
            state.wanted = availability.num_wanted
        else:
            priority = availability.priority
            state.wanted = sum(1 for p in availability.peer_pieces(peer) if priority(p))

    def _sync_snub(
        self, peer: PeerKey, state: _PeerState, now: float, actions: list[Action]
    ) -> bool:
        """Tell the choker about a snub change; returns whether the peer was dropped for it."""
        snubbed = self.queues.is_snubbed(peer)
        if snubbed == (state.snubbed_since is not None):
            if (
                snubbed
                and self._drop_snubbed_after is not None
                and state.snubbed_since is not None
                and now - state.snubbed_since >= self._drop_snubbed_after
            ):
                _log.debug(
                    "peer %s dropped: it snubbed us for %.0f s", peer, now - state.snubbed_since
                )
                actions.append(DropPeer(peer, REASON_SNUBBED))
                actions.extend(self._forget(peer, now))
                return True
            return False
        _log.debug("peer %s %s", peer, "snubs us" if snubbed else "no longer snubs us")
        state.snubbed_since = now if snubbed else None
        self.choker.set_snubbed(peer, snubbed)
        return False

    def _fill(
        self,
        peer: PeerKey,
        state: _PeerState,
        now: float,
        actions: list[Action],
        *,
        batch: bool = True,
    ) -> int:
        """Top up the requests to ``peer``; returns how many were asked for but not found.

        ``batch=False`` tops up whatever room there is (a new deadline piece should not wait
        for a quarter of the queue to drain)."""
        if not state.interested or state.starved == self._epoch:
            return 0
        choked = state.choking_us
        if choked and not state.allowed_fast:
            return 0  # most peers choke us: answer them before any rate arithmetic
        requests = self.picker.requests
        outstanding = requests.num_outstanding(peer)
        depth = self.queues.desired_depth(peer, now)
        room = depth - outstanding
        # Batch: top up once a quarter of the queue has drained (or the pipe is empty).
        if room <= 0 or (batch and outstanding and room < max(1, depth // 4)):
            return 0
        parole_peers = self.queues.parole_peers
        parole = peer in parole_peers
        # A parole peer may finish a piece a departed peer started once only parole peers
        # that have it are left (PiecePicker.pick's on_parole): else it would never finish.
        blocks = self.picker.pick(
            peer,
            room,
            now,
            choked=choked,
            exclusive=parole,
            on_parole=parole_peers if parole else None,
            arrived=self.queues.is_waiting,
        )
        actions.extend(SendRequest(peer, block) for block in blocks)
        if len(blocks) < room:
            state.starved = self._epoch
            # Asked for less than it could take: maybe because end-game began (cheap to
            # ask: a peer is starved once per epoch at most).
            if not self._endgame and self.picker.in_endgame():
                self._entered_endgame()
        return room - len(blocks)

    def _fill_all(self, now: float, actions: list[Action]) -> None:
        if self.picker.availability.num_wanted == 0:
            return
        for peer, state in list(self._peers.items()):
            # _fill's own first tests, made here: most peers stop at them (not interesting,
            # choking us, or starved this epoch), and a big swarm runs this loop per tick.
            if (
                state.interested
                and state.starved != self._epoch
                and (not state.choking_us or state.allowed_fast)
            ):
                self._fill(peer, state, now, actions)

    def _give_duplicates(self, peers: Iterable[PeerKey], now: float, actions: list[Action]) -> None:
        """End-game: top up those of ``peers`` that ran dry (fewer requests out than the
        picker's ``endgame_depth``), starved or not: they may take a duplicate now.

        Only these peers, each once: a peer with requests out is topped up by its own next
        block, as before end-game, and the others have nothing new to take (libtorrent too
        asks for a busy block only for the peer being topped up, with nothing else out).
        """
        picker = self.picker
        if not picker.in_endgame():
            return
        depth = picker.endgame_depth
        num_outstanding = picker.requests.num_outstanding
        for peer in peers:
            state = self._peers.get(peer)
            if state is not None and state.interested and num_outstanding(peer) < depth:
                state.starved = -1
                self._fill(peer, state, now, actions)

    def _spread_endgame(self, now: float, actions: list[Action]) -> None:
        """End-game began in this step: every idle peer may take a duplicate now rather than
        at the next refill. Once per end-game (a pass over every peer, a picker run for the
        dry ones only), not per block received: that pass per block made end-game cost
        about the cube of the peer count."""
        self._spread_due = False
        self._give_duplicates(list(self._peers), now, actions)

    def _fill_one(self, peer: PeerKey, state: _PeerState, now: float) -> list[Action]:
        actions: list[Action] = []
        self._fill(peer, state, now, actions)
        return actions

    def _released(self, now: float, actions: list[Action], pieces: Iterable[int]) -> None:
        """Blocks of ``pieces`` became free: give them to whoever has them and room.

        Only the peers that have one of those pieces can take them, so only those forget
        that they were starved (a reject per block on every choke would otherwise make
        every peer ask the picker again).
        """
        availability = self.picker.availability
        wanted = {p for p in pieces if self.picker.wants(p)}
        if not wanted:
            return
        for peer, state in self._peers.items():
            if state.starved >= 0 and any(availability.peer_has(peer, p) for p in wanted):
                state.starved = -1
        self._fill_all(now, actions)
        # A peer gone or choking us freed blocks nobody else took: end-game is over (the
        # have gate reads _endgame, and a new end-game is logged again). After the refill,
        # so blocks taken straight back leave end-game on.
        self._left_endgame()

    def _offer_if_urgent(self, piece: int, now: float, actions: list[Action]) -> None:
        """``piece`` got a deadline, or is wanted again (hashed bad, discarded or lost) with
        one: offer it now to the peers that have it, whatever room their queues have.

        Only they can take it, and the refill batch would keep it waiting until a quarter of a
        peer's queue drains, seconds a player may not have. A piece without a deadline waits
        for the batch like any other.
        """
        picker = self.picker
        if picker.strategy.deadline(piece) is None or not picker.wants(piece):
            return
        holders = picker.availability.holders(piece)  # one pass, not a lookup per peer
        for peer, state in self._peers.items():
            if peer in holders:
                state.starved = -1
                self._fill(peer, state, now, actions, batch=False)

    def _top_up(self, peers: Iterable[PeerKey], now: float, actions: list[Action]) -> None:
        """Requests to ``peers`` (each named once) were just cancelled because their piece
        was verified meanwhile: top up those with room now, by the refill's rule.

        Our own choice, to keep pipes full: left for their next block or the next refill,
        these pipes run short, or empty for up to a refill interval when that piece was all
        a peer had out. (libtorrent 2.x does not refill here: its cancel keeps the request's
        slot until the peer answers.) Bounded: only these peers, each once. A cancel frees
        no block, so a peer the picker found nothing more for this epoch is asked again only
        where fewer requests out can change its answer: an end-game duplicate (handed out
        below ``endgame_depth`` requests out) or a deadline piece (an earlier arrival
        estimate). Otherwise it would cost a picker run for nothing.
        """
        picker = self.picker
        if picker.availability.num_wanted == 0:
            return
        epoch = self._epoch
        endgame: bool | None = None  # looked up once, and only for a starved peer
        deadlines = False
        for peer in peers:
            state = self._peers.get(peer)
            if state is None or not state.interested:
                continue  # gone (banned in this step), or nothing left to want of it
            if state.choking_us and not state.allowed_fast:
                continue  # it takes no requests (the unchoke will ask)
            if state.starved == epoch:
                if endgame is None:
                    endgame = picker.in_endgame()
                    # Any layer's deadline counts (the picker's own test: no dict copied).
                    deadlines = picker.has_deadlines()
                if not deadlines and not (
                    endgame and picker.requests.num_outstanding(peer) < picker.endgame_depth
                ):
                    continue
                state.starved = -1
            self._fill(peer, state, now, actions)

    def _forget(self, peer: PeerKey, now: float) -> list[Action]:
        """Remove ``peer`` from every strategy; returns the follow-ups (new unchokes, refills)."""
        self._peers.pop(peer)
        freed = self.picker.remove_peer(peer)
        self.queues.remove_peer(peer)
        self._revelation.peer_left(peer)
        actions: list[Action] = []
        self._choke_actions(self.choker.remove_peer(peer, now), actions)
        if freed:
            self._released(now, actions, {block.piece for block in freed})
        return actions

    # ---------------------------------------------------------------- peers

    def _joined(self, event: PeerJoined, now: float) -> list[Action]:
        peer = event.peer
        try:
            hash(peer)
        except TypeError:
            raise LocalProtocolError(f"a peer key must be hashable, not {peer!r}") from None
        # A new key of a banned identity (the liar's host, from another port) is refused too.
        if peer in self._banned or self.queues.refuses(peer):
            _log.debug("peer %s dropped: it was banned for bad data earlier", peer)
            return [DropPeer(peer, REASON_BANNED)]
        if peer in self._peers:
            raise LocalProtocolError(f"peer {peer!r} joined twice")
        offer = self._checked_offer(event.allowed_fast)  # checked even if never granted
        self._peers[peer] = _PeerState(event.fast, event.upload_only, offer if event.fast else ())
        self.picker.add_peer(peer)
        self.queues.add_peer(peer, now, event.reqq)
        self.choker.add_peer(peer, now)
        actions = self._revelation.peer_joined(peer, now, fast=event.fast)
        self._pull_deadline(self._revelation.next_deadline())
        return actions

    def _checked_offer(self, pieces: Sequence[int]) -> tuple[int, ...]:
        """The allowed-fast pieces a :class:`PeerJoined` offers, checked before the peer joins
        (the client's mistake: an offer that is not a sequence of at most
        :data:`MAX_ALLOWED_FAST` pieces of the torrent), each once, in their order."""
        if isinstance(pieces, str | bytes) or not isinstance(pieces, Sequence):
            raise LocalProtocolError(f"allowed_fast must be a sequence of pieces, not {pieces!r}")
        if len(pieces) > MAX_ALLOWED_FAST:
            raise LocalProtocolError(
                f"allowed_fast offers {len(pieces)} pieces, more than {MAX_ALLOWED_FAST}"
            )
        for piece in pieces:
            self.geometry.check_piece(piece)
        return tuple(dict.fromkeys(pieces))

    def _grant_allowed_fast(self, peer: PeerKey, state: _PeerState, actions: list[Action]) -> None:
        """Send ``peer`` its allowed-fast set, once (libtorrent's ``send_allowed_set`` at the
        peer's first interest: by then its bitfield is known, so no grant is spent on a piece
        it has). None to a peer that only uploads (BEP 21, or a seed: it wants nothing), nor
        while super-seeding (a grant would show pieces BEP 16 keeps hidden); the chance is
        gone for the connection all the same, as libtorrent's. Pieces we lack are granted
        too, as libtorrent grants them: the peer may ask for one once we announce it."""
        offer, state.offer = state.offer, ()
        if state.upload_only or isinstance(self._revelation, SuperSeeding):
            return
        availability = self.picker.availability
        if availability.is_seed(peer):
            return
        has = availability.peer_has
        actions.extend(SendAllowedFast(peer, piece) for piece in offer if not has(peer, piece))

    def _pull_deadline(self, deadline: float | None) -> None:
        """Bring the next tick forward to ``deadline`` if it comes sooner."""
        if deadline is not None and (self._deadline is None or deadline < self._deadline):
            self._deadline = deadline

    def _left(self, event: PeerLeft, now: float) -> list[Action]:
        self._peer(event.peer)
        return self._forget(event.peer, now)

    def _bitfield(self, event: PeerBitfield, now: float) -> list[Action]:
        peer = event.peer
        state = self._peer(peer)
        self.picker.peer_bitfield(peer, event.pieces)
        actions = self._revelation.peer_bitfield(peer, event.pieces, now)
        self._recount_wanted(peer, state)
        self._set_interest(peer, state, actions)
        state.starved = -1
        return actions

    def _have_all(self, event: PeerHaveAll, now: float) -> list[Action]:
        peer = event.peer
        state = self._peer(peer)
        self.picker.peer_have_all(peer)
        actions = self._revelation.peer_have_all(peer, now)
        state.starved = -1
        self._recount_wanted(peer, state)
        self._set_interest(peer, state, actions)
        return actions

    def _have_none(self, event: PeerHaveNone, now: float) -> list[Action]:
        peer = event.peer
        state = self._peer(peer)
        self.picker.peer_have_none(peer)
        actions = self._revelation.peer_have_none(peer, now)
        state.wanted = 0
        self._set_interest(peer, state, actions)
        return actions

    def _peer_have(self, event: PeerHave, now: float) -> list[Action]:
        peer, piece = event.peer, event.piece
        # The hot path of a big swarm (every have of every peer), so calls are spared: _peer
        # written out; the availability's have says whether it is news (not for a piece
        # known, past the end, or a seed's), which with the piece's priority (wants()) is
        # all PiecePicker.peer_have would tell, without a lookup before it.
        try:
            state = self._peers[peer]
        except (KeyError, TypeError):
            raise LocalProtocolError(f"peer {peer!r} never joined (or was dropped)") from None
        availability = self.picker.availability
        news = availability.have(peer, piece)
        actions = self._revelation.peer_have(peer, piece, now)
        if news and availability.priority(piece):
            state.wanted += 1
            picker = self.picker
            # Whether the piece has a deadline: looked up only where it decides something
            # (most haves come from peers that choke us, and ask nothing).
            urgent: bool | None = None
            # A peer we are interested in may have run out of blocks to ask of it (all it
            # has is asked of others): ask it for the new piece now, not at the next
            # refill, or each piece a seed reveals one by one (super-seeding, a peer
            # finishing pieces as we go) costs up to a refill interval idle. A peer starved
            # this epoch is asked only if the piece gives the picker something it did not
            # have: blocks free; an end-game duplicate, which it hands out only while the
            # peer has fewer than endgame_depth requests out; a late deadline block to ask
            # of a faster peer too. Otherwise the picker would find nothing more (O(W) for
            # nothing), so the peer stays starved and the have costs O(1). A peer not
            # starved goes on to _fill whatever the piece: it may have room since its last
            # fill (a race for a block it lost, end-game or a late deadline block,
            # cancelled a request, and the loser is not topped up), and _fill's room test
            # comes before any picker run, so a flood of haves to a full pipe costs O(1)
            # each.
            if state.interested and state.starved == self._epoch:
                requests = picker.requests
                if not (
                    requests.num_free(piece)
                    or (self._endgame and requests.num_outstanding(peer) < picker.endgame_depth)
                ):
                    urgent = picker.strategy.deadline(piece) is not None
                    if not urgent:
                        return actions
            state.starved = -1
            self._set_interest(peer, state, actions)
            # A peer that chokes us takes requests only for its allowed-fast pieces (BEP
            # 6): a have of one of them is asked at once; its other haves run no picker
            # (its flood of them would otherwise cost a picker run each).
            if not state.choking_us or (state.allowed_fast and picker.is_allowed_fast(peer, piece)):
                # A deadline piece takes whatever room there is, as a deadline newly set
                # does (_offer_if_urgent): the batch would hold it until a quarter of the
                # queue drains, seconds a player may not have. Bounded: a have is news
                # once per peer and piece, and a full pipe still runs no picker.
                if urgent is None:
                    urgent = picker.strategy.deadline(piece) is not None
                self._fill(peer, state, now, actions, batch=not urgent)
        return actions

    def _dont_have(self, event: PeerDontHave, now: float) -> list[Action]:
        peer, piece = event.peer, event.piece
        state = self._peer(peer)
        had = self.picker.peer_dont_have(peer, piece)
        actions = self._revelation.peer_dont_have(peer, piece, now)
        if had and self.picker.wants(piece):
            # One wanted piece fewer, as a have counts one more: a recount would walk every
            # piece the peer has for each 9-byte message.
            state.wanted -= 1
            self._set_interest(peer, state, actions)
        return actions

    def _upload_only(self, event: PeerUploadOnly, now: float) -> list[Action]:
        # Kept for the client's questions (is_upload_only); nothing here depends on it: such
        # a peer tells us it is not interested, which the choker already hears.
        self._peer(event.peer).upload_only = bool(event.upload_only)
        return []

    def _choked_us(self, event: PeerChokedUs, now: float) -> list[Action]:
        peer = event.peer
        state = self._peer(peer)
        if state.choking_us:
            return []
        state.choking_us = True
        if self._streaming() is not None:
            # Now, not at the next refresh: a choking peer's rate must not keep deadline
            # pieces from the peers that can be asked (PiecePicker._deadline_ok).
            self._set_rate(peer, state, now)
        actions: list[Action] = []
        # Blocks that arrived and wait for our disk are served, not requests: kept (asked
        # of the peer until stored or dropped), or they would be asked of others again.
        queues = self.queues
        freed = self.picker.peer_choked(
            peer, state.fast, keep=lambda block: queues.is_waiting(peer, block)
        )
        if freed:
            self._released(now, actions, {block.piece for block in freed})
        return actions

    def _unchoked_us(self, event: PeerUnchokedUs, now: float) -> list[Action]:
        peer = event.peer
        state = self._peer(peer)
        if not state.choking_us:
            return []
        state.choking_us = False
        state.starved = -1
        if state.rate_zeroed:
            # Now, not at the next tick: its rate, zeroed at the choke, counts again for
            # deadline pieces (PiecePicker._deadline_ok), this refill's first.
            self._set_rate(peer, state, now)
        return self._fill_one(peer, state, now)

    def _interested(self, event: PeerInterested, now: float) -> list[Action]:
        state = self._peer(event.peer)
        actions: list[Action] = []
        if state.offer:  # before an unchoke, as libtorrent's on_interested
            self._grant_allowed_fast(event.peer, state, actions)
        self._choke_actions(self.choker.set_interested(event.peer, True, now), actions)
        return actions

    def _not_interested(self, event: PeerNotInterested, now: float) -> list[Action]:
        self._peer(event.peer)
        actions: list[Action] = []
        self._choke_actions(self.choker.set_interested(event.peer, False, now), actions)
        return actions

    def _allowed_fast(self, event: AllowedFast, now: float) -> list[Action]:
        state = self._peer(event.peer)
        picker = self.picker
        news = picker.allowed_fast(event.peer, event.piece)
        if state.fast and not state.allowed_fast:
            state.allowed_fast = True
            if state.rate_zeroed:
                self._set_rate(event.peer, state, now)  # no longer idle (see _choked_us)
        # Only a piece new to the allowed set and wanted can give the picker something: a
        # repeated AllowedFast (9 bytes) must not cost a picker run each.
        if not news or not picker.wants(event.piece):
            return []
        state.starved = -1
        if state.choking_us and state.fast:
            return self._fill_one(event.peer, state, now)
        return []

    # ---------------------------------------------------------------- blocks

    def _block_received(self, event: BlockReceived, now: float) -> list[Action]:
        peer, block = event.peer, event.block
        state = self._peer(peer)
        if not _is_triple(block) or block[2] < 0:
            return []  # not a block at all: the client should have filtered it
        block = _as_block(block)
        length = block[2]
        queues = self.queues
        queues.block_received(peer, length, now)
        queues.block_settled(peer, block, now)  # stored: it no longer waits for the disk
        self.choker.downloaded(peer, length, now)
        actions: list[Action] = []
        if state.snubbed_since is not None:  # the queues cleared their snub: it ends
            self._sync_snub(peer, state, now, actions)
        picker = self.picker
        holder = picker.holder(block[0])
        received = picker.block_received(peer, block)
        if holder is not None and picker.holder(block[0]) is None:
            # The parole holder chokes us and nothing of the piece is asked of it any more:
            # the piece is everyone's again (the peers starved by its hold may take it).
            self._released(now, actions, (block[0],))
        if received is not None:
            # Not to a loser whose copy arrived already (it waits for our disk): it was sent.
            actions.extend(
                SendCancel(other, block)
                for other in received.cancel
                if not queues.is_waiting(other, block)
            )
        self._fill(peer, state, now, actions)
        if received is not None and self._endgame:
            # End-game: this peer may have run dry (fewer requests out than endgame_depth):
            # it takes a duplicate now, starved this epoch or not, as libtorrent asks for a
            # busy block for the peer it tops up when that peer has nothing else out. Only
            # this peer: a pass over every peer here (a new epoch at every second or third
            # block) made end-game cost about the cube of the peer count, and the idle peers
            # got their duplicates when end-game began (_spread_endgame).
            self._give_duplicates((peer,), now, actions)
        # The peers that lost the race for this block (end-game, a late deadline block) are
        # a request short, and are not topped up here: their next block or the refill does.
        # Topped up at once, they lengthened the end-game tail in benchmarks/swarm_sim.py
        # (super-seeding, seeds 0-3: the largest share of a leecher's time spent on its last
        # 1% of pieces went from 2.8% to 3.7%, worse on every seed).
        return actions

    def _choking_us(self, peer: PeerKey) -> bool:
        """Whether connected ``peer`` chokes us (for the picker's parole rules)."""
        state = self._peers.get(peer)
        return state is not None and state.choking_us

    def _askable(self, peer: PeerKey, piece: int, now: float) -> bool:
        """Whether ``peer`` could be asked for ``piece`` at ``now``, for the picker's deadline
        choice (libtorrent's ``can_request_time_critical``): it unchokes us or allows the
        piece fast (one that chokes us and allows nothing fast is out already: its rate is
        0), is not snubbed, has no more than twice its queue depth out, and, on parole, may
        take the piece (``PiecePicker.parole_may_take``)."""
        state = self._peers.get(peer)
        if state is None or not state.interested:
            return False
        picker = self.picker
        if state.choking_us and state.allowed_fast and not picker.is_allowed_fast(peer, piece):
            return False  # one that allows nothing fast has rate 0 (_set_rate): no rival
        queues = self.queues
        if queues.is_snubbed(peer):
            return False
        if picker.requests.num_outstanding(peer) > 2 * queues.desired_depth(peer, now):
            return False
        parole_peers = queues.parole_peers
        return peer not in parole_peers or picker.parole_may_take(peer, piece, now, parole_peers)

    def _block_arrived(self, event: BlockArrived, now: float) -> list[Action]:
        peer, block = event.peer, event.block
        state = self._peer(peer)
        # Only a block asked of it: what is recorded stays bounded by its requests, and a
        # block nobody asked for proves nothing.
        if self.geometry.is_block(block) and block in self.picker.requests.outstanding(peer):
            # The peer is sending: a snub ends now, not when our disk gets to the block
            # (libtorrent's incoming_piece clears it on the data's arrival), or a slow disk
            # would have drop_snubbed_after drop a peer that delivered.
            self.queues.block_arrived(peer, block, now)
            if state.snubbed_since is not None:  # the queues cleared their snub: it ends
                self._sync_snub(peer, state, now, [])
        return []  # it is not received yet: BlockReceived does the rest once it is stored

    def _block_dropped(self, event: BlockDropped, now: float) -> list[Action]:
        peer, block = event.peer, event.block
        state = self._peer(peer)
        if not self.geometry.is_block(block):
            return []
        block = _as_block(block)
        queues = self.queues
        requests = self.picker.requests
        actions: list[Action] = []
        if block in requests.outstanding(peer) or queues.is_waiting(peer, block):
            # The peer served it, on time: its clock is refreshed as for an arrival, and no
            # penalty follows (no snub, no revoked allowed-fast piece, no lost parole hold:
            # the drop is ours, so a parole peer is asked again and its piece stays its own,
            # unless it chokes us and cannot be asked: then the hold goes, or it would bar
            # every other peer from the piece for as long as the peer chokes us).
            queues.block_arrived(peer, block, now)
            queues.block_settled(peer, block, now)
            if self.picker.block_dropped(peer, block, choked=state.choking_us):
                self._released(now, actions, (block.piece,))
        return actions

    def _block_rejected(self, event: BlockRejected, now: float) -> list[Action]:
        peer, block = event.peer, event.block
        state = self._peer(peer)
        actions: list[Action] = []
        if not self.geometry.is_block(block):
            return actions  # never asked of anyone (a malformed one is not even hashable)
        block = _as_block(block)
        # A parole peer that unchokes us and rejects forfeits its piece for a while (one
        # rejecting everything would take it straight back at every refill); a choke's
        # rejects (BEP 6) only end the hold, as a choke without the fast extension does.
        # A reject of a block not pending (BEP 6 has the peer answer our cancel with one,
        # a time-out's too) changes nothing.
        if not self.picker.block_rejected(peer, block, None if state.choking_us else now):
            return actions
        if state.choking_us:
            # A peer that chokes us and rejects a request of an allowed-fast piece no longer
            # serves it (libtorrent's incoming_reject_request drops it from the set too):
            # left allowed, the refill below would ask it for the same block again, forever.
            # Only for a request it refused: libtorrent drops the piece for any reject, the
            # answer to our own cancel too, which says nothing of the piece (BEP 6: every
            # request, cancelled or not, gets exactly one piece or reject), and a piece
            # cancelled for its priority would not be asked of the peer again once wanted.
            self.picker.revoke_allowed_fast(peer, block.piece)
        self._released(now, actions, (block.piece,))
        return actions

    def _request_timed_out(self, event: RequestTimedOut, now: float) -> list[Action]:
        peer = event.peer
        self._peer(peer)
        actions: list[Action] = []
        if not self.geometry.is_block(event.block):
            return actions  # never asked of anyone (a malformed one is not even hashable)
        block = _as_block(event.block)
        if self.queues.is_waiting(peer, block):
            return actions  # it arrived and waits for our disk: nothing is late
        if self.picker.block_timed_out(peer, block, now):
            self.queues.request_timed_out(peer, now)
            actions.append(SendCancel(peer, block))
            self._released(now, actions, (block.piece,))
        return actions

    def _block_sent(self, event: BlockSent, now: float) -> list[Action]:
        self._peer(event.peer)
        block = event.block
        # Any well-formed request counts (a peer may ask for blocks off our 16 KiB grid).
        if _is_triple(block) and block[2] >= 0:
            self.choker.uploaded(event.peer, block[2], now)
        return []

    # ---------------------------------------------------------------- pieces

    def _cancel_piece(self, piece: int, actions: list[Action]) -> list[PeerKey]:
        """Cancel every request still out for ``piece`` (it is settled either way); returns
        the peers cancelled, each once, in the order of their first cancel."""
        requests = self.picker.requests
        if not requests.is_started(piece):
            return []
        cancelled: dict[PeerKey, None] = {}  # ordered: the top-ups that follow are too
        is_waiting = self.queues.is_waiting
        for block in self.geometry.blocks(piece):
            for peer in requests.requesters(block):
                if not is_waiting(peer, block):  # else it arrived (it waits for our disk)
                    actions.append(SendCancel(peer, block))
                cancelled[peer] = None
        return list(cancelled)

    def _piece_verified(self, event: PieceVerified, now: float) -> list[Action]:
        piece = event.piece
        self.geometry.check_piece(piece)
        actions: list[Action] = []
        if self.picker.requests.have(piece):
            return actions
        cancelled = self._cancel_piece(piece, actions)
        if event.good:
            was_wanted = self.picker.wants(piece)
            sources = self.picker.piece_passed(piece)
            self.queues.piece_passed(sources)
            actions.extend(self._revelation.piece_added(piece, now))
            if was_wanted:
                availability = self.picker.availability
                holders = availability.holders(piece)  # one pass, not a lookup per peer
                for peer, state in self._peers.items():
                    if peer in holders:
                        state.wanted -= 1
                        if state.wanted <= 0:
                            state.wanted = 0
                            self._set_interest(peer, state, actions)
                if availability.num_wanted == 0:
                    self._endgame = False
                    _log.debug(
                        "every wanted piece is verified: %d of %d pieces had",
                        self.num_have,
                        self.geometry.num_pieces,
                    )
            if self.is_seed:
                self.choker.seeding = True
            # After the interest updates: a peer with nothing left for us is asked nothing.
            self._top_up(cancelled, now, actions)
            return actions
        sources = self.picker.piece_failed(piece)
        _log.debug(
            "piece %d failed its hash check (peers that sent blocks of it: %d)",
            piece,
            len(sources),
        )
        self._left_endgame()
        # Every source counts, gone or not: a piece from a banned peer and one other is
        # not that other's alone. A source that left before the verdict is judged too (the
        # queueing layer remembers its trust) and dropped if banned: the client bans what
        # it came from (closing a connection already closed does nothing), else a liar
        # would escape by hanging up before the hash check.
        banned = self.queues.piece_failed(sources, ban_sole_contributor=event.ban_sole_contributor)
        for peer in banned:
            connected = peer in self._peers
            _log.debug(
                "peer %s banned: it sent data of piece %d, which failed%s",
                peer,
                piece,
                "" if connected else " (it left before the verdict)",
            )
            actions.append(DropPeer(peer, REASON_BAD_DATA))
            if len(self._banned) < _MAX_BANNED:
                self._banned.add(peer)
            if connected:
                actions.extend(self._forget(peer, now))
        self._offer_if_urgent(piece, now, actions)
        self._released(now, actions, (piece,))
        return actions

    def _piece_discarded(self, event: PieceDiscarded, now: float) -> list[Action]:
        """The storage dropped ``piece`` unjudged: fetch it again, as a bad piece is, but
        blame no one (its data was never found wrong)."""
        piece = event.piece
        self.geometry.check_piece(piece)
        actions: list[Action] = []
        if self.picker.requests.have(piece):
            return actions
        self._cancel_piece(piece, actions)
        # The picker's bad-piece path frees every block; the sources it returns are not
        # handed to the queueing layer, which would take trust from them or ban them.
        self.picker.piece_failed(piece)
        _log.debug("piece %d discarded by the storage: fetched again", piece)
        self._left_endgame()
        self._offer_if_urgent(piece, now, actions)
        self._released(now, actions, (piece,))
        return actions

    def _piece_lost(self, event: PieceLost, now: float) -> list[Action]:
        piece = event.piece
        self.geometry.check_piece(piece)
        picker = self.picker
        if not picker.requests.have(piece):
            return []
        picker.lose_piece(piece)
        _log.debug(
            "piece %d lost from storage%s", piece, ", wanted again" if picker.wants(piece) else ""
        )
        self._left_endgame()
        self.choker.seeding = self.is_seed
        actions = self._revelation.piece_lost(piece, now)
        if picker.wants(piece):
            # Wanted again: the peers that have it are interesting again, and may be asked.
            availability = picker.availability
            for peer, state in self._peers.items():
                if availability.peer_has(peer, piece):
                    state.wanted += 1
                    state.starved = -1
                    self._set_interest(peer, state, actions)
            self._epoch += 1
            self._offer_if_urgent(piece, now, actions)
            self._fill_all(now, actions)
        return actions

    def _priorities_changed(self, event: PrioritiesChanged, now: float) -> list[Action]:
        picker = self.picker
        geometry = self.geometry
        # Everything is checked before anything changes: a bad field raises with the brain as
        # it was (the picker's priorities and every peer's wanted count agreeing).
        deadlines = event.deadlines
        streaming: Streaming | None = None
        if deadlines is not None:
            streaming = self._streaming()
            if streaming is None:
                raise LocalProtocolError("deadlines need a Streaming selection strategy")
            for piece, when in deadlines.items():
                geometry.check_piece(piece)
                if type(when) not in (int, float) or not math.isfinite(when):
                    raise LocalProtocolError(f"a deadline is a finite time, not {when!r}")
        file_levels = (
            geometry.piece_priorities(event.file_priorities)
            if event.file_priorities is not None
            else None
        )
        piece_levels: dict[int, int] = {}
        for piece, priority in (event.piece_priorities or {}).items():
            geometry.check_piece(piece)
            piece_levels[piece] = _check_priority(priority)
        if file_levels is not None:
            picker.set_piece_priorities(file_levels)
        if piece_levels:
            picker.set_piece_priorities(piece_levels)  # they win over the file priorities
        if deadlines is not None and streaming is not None:
            # They replace every earlier deadline, an inner layer's too; the new ones go to
            # the outermost layer (whose deadlines win over an inner layer's anyway).
            for layer in streaming_layers(picker.strategy):
                layer.clear_deadlines()
            for piece, when in deadlines.items():
                if not picker.requests.have(piece):
                    streaming.set_deadline(piece, when)
        actions: list[Action] = []
        # Requests for pieces no longer wanted are cancelled.
        # A parole peer keeps its hold on such a piece (see PiecePicker.block_cancelled),
        # unless it chokes us: nothing could be asked of it when the piece is wanted again.
        requests = picker.requests
        for peer in list(requests.peers()):
            peer_state = self._peers.get(peer)
            choked = peer_state is not None and peer_state.choking_us
            for block in list(requests.outstanding(peer)):
                if not picker.wants(block.piece):
                    picker.block_cancelled(peer, block, choked=choked)
                    if not self.queues.is_waiting(peer, block):  # else it arrived already
                        actions.append(SendCancel(peer, block))
        for peer, state in self._peers.items():
            self._recount_wanted(peer, state)
            self._set_interest(peer, state, actions)
        self._left_endgame()
        self._epoch += 1
        self._fill_all(now, actions)
        return actions

    # ---------------------------------------------------------------- strategy and deadlines

    def _strategy_changed(self, event: StrategyChanged, now: float) -> list[Action]:
        strategy = event.strategy
        for name in ("tier", "rank", "order", "deadline"):
            if not callable(getattr(strategy, name, None)):
                raise LocalProtocolError(f"{strategy!r} is not a piece selection strategy")
        old = self._streaming()
        old_layers = list(streaming_layers(self.picker.strategy))
        pending = self.deadlines()  # every layer's
        self._own_streaming = None
        self.picker.strategy = strategy
        streaming = self._streaming()
        kept = {id(layer) for layer in streaming_layers(strategy)}
        if pending:
            # The new strategy's own deadlines: those of its layers new to the switch (a
            # layer shared with the old chain may hold one an outer old layer hid, and the
            # deadline in force, in ``pending``, goes before it).
            old_ids = {id(layer) for layer in old_layers}
            own: set[int] = set()
            for fresh in streaming_layers(strategy):
                if id(fresh) not in old_ids:
                    own.update(fresh.deadlines())
            layer = self._ensure_streaming(now)
            for piece, when in pending.items():
                # A fresh layer's own deadline wins (set on the outermost layer, a carried
                # one would hide an inner layer's).
                if piece not in own:
                    layer.set_deadline(piece, when)
        elif streaming is not None and old is None:
            self._set_rates(now)  # a Streaming strategy decides by rates from now on
        # The deadlines moved (not copied): the old strategy's layers outside the new chain
        # forget theirs, or switching back to that strategy would bring back a deadline
        # cleared meanwhile. A layer shared by both chains keeps its own.
        for layer in old_layers:
            if id(layer) not in kept:
                layer.clear_deadlines()
        self._drop_stale_deadlines()
        # Every peer may be asked again: a strategy may allow a peer pieces the old one kept
        # from it (a deadline piece it was too slow for). Rare, so all of them.
        actions: list[Action] = []
        self._epoch += 1
        self._fill_all(now, actions)
        return actions

    def _deadline_set(self, event: PieceDeadlineSet, now: float) -> list[Action]:
        piece, when = event.piece, event.when
        self.geometry.check_piece(piece)
        if type(when) not in (int, float) or not math.isfinite(when):
            raise LocalProtocolError(f"a deadline is a finite time, not {when!r}")
        picker = self.picker
        if picker.requests.have(piece):
            return []  # met already (libtorrent answers at once too)
        self._ensure_streaming(now).set_deadline(piece, when)
        actions: list[Action] = []
        self._offer_if_urgent(piece, now, actions)
        return actions

    def _deadline_cleared(self, event: PieceDeadlineCleared, now: float) -> list[Action]:
        piece = event.piece
        self.geometry.check_piece(piece)
        streaming = self._streaming()
        if streaming is None or streaming.deadline(piece) is None:
            return []
        # Cleared on every layer that holds it: the outermost one's hides an inner one's,
        # which would make the piece urgent again.
        for layer in streaming_layers(streaming):
            layer.clear_deadline(piece)
        # The layer the brain added stays (its rates stay measured): a player clears and sets
        # deadlines one after the other, and each set would otherwise measure every peer.
        actions: list[Action] = []
        if self.picker.wants(piece):
            # A peer too slow for the deadline may take the piece now: the starved ones that
            # have it are asked again.
            availability = self.picker.availability
            for peer, state in self._peers.items():
                if state.starved == self._epoch and availability.peer_has(peer, piece):
                    state.starved = -1
                    self._fill(peer, state, now, actions)
        return actions

    def _deadlines_cleared(self, event: PieceDeadlinesCleared, now: float) -> list[Action]:
        streaming = self._streaming()
        if streaming is None:
            return []
        had = False
        for layer in streaming_layers(streaming):  # every layer's, inner ones too
            had = layer.clear_deadlines() or had  # cleared first: no short cut
        own = self._own_streaming
        if own is not None:  # check(): then it is the picker's strategy
            self.picker.strategy = own.then  # no deadlines left: no rates to measure
        self._own_streaming = None
        actions: list[Action] = []
        if had:
            self._epoch += 1  # pieces slow peers were refused are theirs to take again
            self._fill_all(now, actions)
        return actions

    def _ensure_streaming(self, now: float) -> Streaming:
        """The outermost :class:`Streaming` layer, put around the strategy if it has none."""
        streaming = self._streaming()
        if streaming is None:
            streaming = Streaming(then=self.picker.strategy)
            self.picker.strategy = streaming
            self._own_streaming = streaming
            self._set_rates(now)  # once, when the layer comes: ticks keep them fresh
        return streaming

    def _set_rates(self, now: float) -> None:
        for peer, state in self._peers.items():
            self._set_rate(peer, state, now)

    def _drop_stale_deadlines(self) -> None:
        """Forget deadlines a given strategy brought, in any of its
        :class:`~bip_select.Streaming` layers, for pieces had or outside the torrent."""
        requests = self.picker.requests
        n = self.geometry.num_pieces
        for streaming in streaming_layers(self.picker.strategy):
            for piece in streaming.deadlines():  # a copy: clearing is safe
                if not 0 <= piece < n or requests.have(piece):
                    streaming.clear_deadline(piece)

    def _entered_endgame(self) -> None:
        """End-game is on (every block left is requested): log it the first time."""
        if not self._endgame:
            self._endgame = True
            self._spread_due = True
            _log.debug(
                "end-game: every block still missing is requested (pieces left: %d); "
                "duplicates go to idle peers",
                self.picker.availability.num_wanted,
            )

    def _left_endgame(self) -> None:
        """Pieces to fetch became free again: end-game, once logged, is over until re-entered."""
        if self._endgame and not self.picker.in_endgame():
            self._endgame = False
            _log.debug("end-game left: pieces to download became free again")

    def _streaming(self) -> Streaming | None:
        """The strategy's outermost :class:`Streaming` layer (where the brain sets deadlines)."""
        return next(streaming_layers(self.picker.strategy), None)

    def check(self) -> None:
        """Verify the internal invariants (for tests): the strategies' and the brain's own."""
        self.picker.check()
        availability = self.picker.availability
        for peer, state in self._peers.items():
            expected = sum(
                1
                for p in range(self.geometry.num_pieces)
                if availability.peer_has(peer, p) and availability.priority(p)
            )
            assert state.wanted == expected, (peer, state.wanted, expected)
            assert state.interested == (expected > 0)
            assert peer in self.queues
            assert (peer in self.queues.parole_peers) == self.queues.on_parole(peer)
            assert peer in self.choker
            assert peer in self.revelation
        for peer in self.picker.requests.peers():
            assert peer in self._peers
        for peer in self.queues.parole_peers:
            assert peer in self._peers
        # A parole hold of a peer that chokes us lasts only while something of the piece is
        # asked of it (a reject ends it) or the piece is allowed fast: else nobody could ever
        # finish the piece.
        picker = self.picker
        for piece, holder in picker._exclusive.items():
            if self._peers[holder].choking_us:
                assert picker.requests.is_asked_of(piece, holder) or picker.is_allowed_fast(
                    holder, piece
                ), (piece, holder)
        own = self._own_streaming
        assert own is None or self.picker.strategy is own
        for piece in self.deadlines():
            assert 0 <= piece < self.geometry.num_pieces
            assert not self.picker.requests.have(piece), piece


def _as_block(block: Block) -> Block:
    """A valid block input as a :class:`Block`: a plain ``(piece, begin, length)`` triple is
    accepted as one, and the picker reads its fields by name (no copy of a Block, the usual
    case: one per block received)."""
    return block if type(block) is Block else Block(*block)


def _is_triple(block: object) -> bool:
    """Whether ``block`` is a ``(piece, begin, length)`` triple of ints (whatever their
    values): anything else is not a block at all, and is ignored rather than hashed."""
    return (
        isinstance(block, tuple)
        and len(block) == 3
        and type(block[0]) is int
        and type(block[1]) is int
        and type(block[2]) is int
    )
