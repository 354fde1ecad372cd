"""Piece selection: which blocks to ask a peer for, by pluggable, mixable strategies.

API:

- Strategies (plain objects; mix them by nesting):

  - ``RarestFirst()``: highest priority first, then the pieces fewest peers have,
    random among equals (BEP 3's recommendation, libtorrent's default).
  - ``RandomFirst(then=RarestFirst(), first=4)``: random pieces until we have
    ``first`` of them (a newcomer needs *something* to trade quickly, and the rarest
    pieces are the slowest to get), then ``then``.
  - ``Sequential()``: in index order within a priority (downloads to play or
    preview; rarity ignored).
  - ``Streaming(then=Sequential())``: pieces with a deadline first, earliest deadline
    first, asked only of peers fast enough to deliver in time (when none is, of any
    peer that no other peer that has the piece and could be asked for it now would
    beat, queues counted), and duplicated to a faster peer when a request will not arrive in
    time;
    ``set_deadline(piece, t)``, ``clear_deadline(piece)``, ``clear_deadlines()``. Other
    pieces by ``then``.
    Under a :class:`~bip_select.SwarmBrain`, set deadlines with its inputs
    (:class:`~bip_select.PieceDeadlineSet`...) rather than on the layer: the brain then
    offers the piece to the peers that have it at once, and adds a layer when the strategy
    has none.

  A strategy implements :class:`Strategy`: ``tier(piece, picker)`` (the hard
  ordering: priority, deadline), ``rank(piece, picker)`` (the soft one within a tier:
  availability for rarest first), ``order(picker, peer)`` (wanted pieces the peer has,
  by ``(tier, rank)``, preferred first) and ``deadline(piece)`` (None without one).
- ``PiecePicker(geometry, rng, strategy=RarestFirst(), have=(), priorities=None,
  endgame_depth=1)``:
  owns an :class:`~bip_select._availability.Availability` (``.availability``) and a
  :class:`~bip_select._requests.RequestBook` (``.requests``) and decides requests:

  - peers: ``add_peer``, ``remove_peer -> dropped blocks``, ``peer_bitfield``,
    ``peer_have``, ``peer_have_all``, ``peer_have_none``, ``peer_dont_have``,
    ``allowed_fast(peer, piece)``, ``is_allowed_fast(peer, piece)``,
    ``revoke_allowed_fast(peer, piece)``,
    ``set_rate(peer, bytes_per_s)``;
  - ``is_interesting(peer)``, ``wants(piece)``;
  - ``pick(peer, count, now, choked=False, exclusive=False, on_parole=None, arrived=None)
    -> list[Block]``:
    choose up to ``count`` blocks and record them as requested. Order: the strategy's,
    with a piece already started ahead of fresh ones of the same tier and rank
    (finish what you started, as libtorrent does: fewer partial pieces in memory,
    sooner haves to trade), and ahead of all its tier once started pieces
    outnumber the connected peers by half again; while choked only
    BEP 6 allowed-fast pieces; ``exclusive`` (a peer on parole) only pieces nobody
    else works on, held to itself (or, given ``on_parole``, a started piece only parole
    peers are left to finish); in end-game (every block of every wanted piece is
    asked of someone) blocks already asked of others, fewest copies first, while the
    peer has fewer than ``endgame_depth`` (1: none) requests pending (never to a peer on
    parole, as libtorrent; nor, our own rule, of a piece a parole peer holds; nor of a
    block ``arrived`` says waits for our disk, as libtorrent's "writing" state). A choked
    peer's pick sorts its allowed-fast pieces (at most :data:`MAX_ALLOWED_FAST`) by the
    strategy's tier and rank, ties by the availability index's order, rather than walking
    every wanted piece: the same order as the strategy's for :class:`RarestFirst` and
    :class:`Sequential` (and :class:`Streaming` over them, but for equal deadlines,
    which go rarest first); :class:`RandomFirst`'s random phase takes them rarest first.
  - ``block_received(peer, block) -> Received | None`` (its ``cancel`` lists the
    end-game losers), ``block_rejected``, ``block_timed_out``, ``block_cancelled``,
    ``block_dropped``, ``peer_choked`` (without the fast extension a choke drops every
    request but those its ``keep`` spares: returns them); a reject, a time-out, a choke,
    a departure or the peer losing the piece ends a parole peer's hold on the piece (a
    time-out, or a reject while the peer unchokes us, also forfeits the piece for a
    while), our own cancel or drop does not (unless the peer chokes us and nothing else
    of the piece is asked of it), nor does the reject that answers our cancel;
  - ``piece_passed(piece)`` / ``piece_failed(piece)`` -> the peers that sent it;
    ``lose_piece(piece)`` (a piece we had is gone: wanted again);
  - priorities: ``set_piece_priority``, ``set_piece_priorities``,
    ``set_file_priorities`` (0 = do not download, 1..7, 4 the default);
  - ``in_endgame()`` (O(1): the request book counts the wanted pieces with no free block),
    ``is_complete()`` (every wanted piece is had), ``has_deadlines()``
    (any :class:`Streaming` layer of the strategy holds a deadline).
"""

from __future__ import annotations

import random
from collections.abc import (
    Callable,
    Collection,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from collections.abc import Set as AbstractSet
from typing import Protocol, TypeAlias

from ._availability import Availability
from ._errors import LocalProtocolError
from ._geometry import BLOCK_SIZE, Block, TorrentGeometry
from ._requests import Received, RequestBook

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_ALLOWED_FAST",
    "PiecePicker",
    "RandomFirst",
    "RarestFirst",
    "Sequential",
    "Strategy",
    "Streaming",
]

PeerKey: TypeAlias = Hashable

DEFAULT_PRIORITY = 4
"""The priority of a piece nobody set one for (libtorrent's default)."""

MAX_ALLOWED_FAST = 64
"""Allowed-fast pieces remembered per peer (BEP 6 suggests 10; a peer cannot make us keep more),
and the most the brain grants one peer (:class:`~bip_select.PeerJoined`'s ``allowed_fast``)."""

Tier: TypeAlias = tuple[float, ...]


class Strategy(Protocol):
    """What :class:`PiecePicker` asks a selection strategy."""

    def tier(self, piece: int, picker: PiecePicker) -> Tier:
        """The hard rank of a wanted piece: lower tiers are always picked first.

        Started pieces are preferred over fresh ones of the same tier.
        """
        ...

    def rank(self, piece: int, picker: PiecePicker) -> Tier:
        """The soft rank of a wanted piece within its tier (rarest first: its count).

        A started piece is preferred over a fresh one of the same tier and rank.
        """
        ...

    def order(self, picker: PiecePicker, peer: PeerKey) -> Iterator[int]:
        """Wanted pieces ``peer`` has, by ascending ``(tier, rank)``, preferred first.

        May include started pieces (the picker skips them). Lazy: the picker stops as
        soon as it has enough.
        """
        ...

    def deadline(self, piece: int) -> float | None:
        """When ``piece`` is needed (None: no deadline)."""
        ...


class RarestFirst:
    """Highest priority first, then rarest first, random among equally rare pieces.

    >>> picker = PiecePicker(TorrentGeometry(3, 16384), random.Random(0))
    >>> picker.add_peer("a"); picker.peer_bitfield("a", {0, 1, 2})
    >>> picker.add_peer("b"); picker.peer_bitfield("b", {0, 2})
    >>> picker.pick("a", 1, now=0.0)
    [Block(piece=1, begin=0, length=16384)]
    """

    __slots__ = ()

    def tier(self, piece: int, picker: PiecePicker) -> Tier:
        """Priority only: among equal priorities rarity is a preference, not a rule."""
        return (-picker.availability.priority(piece),)

    def rank(self, piece: int, picker: PiecePicker) -> Tier:
        """How many peers have the piece."""
        return (picker.availability.count(piece),)

    def order(self, picker: PiecePicker, peer: PeerKey) -> Iterator[int]:
        """The availability index's order: priority, count, random."""
        return picker.availability.iter_wanted(peer)

    def deadline(self, piece: int) -> float | None:
        """No deadlines."""
        return None


class Sequential:
    """Lowest index first within a priority (rarity ignored).

    >>> picker = PiecePicker(TorrentGeometry(3, 16384), random.Random(0), Sequential())
    >>> picker.add_peer("a"); picker.peer_have_all("a")
    >>> [b.piece for b in picker.pick("a", 3, now=0.0)]
    [0, 1, 2]
    """

    __slots__ = ()

    def tier(self, piece: int, picker: PiecePicker) -> Tier:
        """Priority, then index: strictly in order."""
        return (-picker.availability.priority(piece), piece)

    def rank(self, piece: int, picker: PiecePicker) -> Tier:
        """Nothing beyond the tier."""
        return ()

    def order(self, picker: PiecePicker, peer: PeerKey) -> Iterator[int]:
        """Scan from the first wanted piece, once per priority level in use."""
        availability = picker.availability
        start = picker.first_wanted()
        priority = availability.priority
        for level in picker.priority_levels():
            # The peer's own pieces from the first wanted one: a peer with few pieces
            # costs few steps (the bitmap is searched in C), a seed a plain count.
            for piece in availability.peer_pieces(peer, start):
                if priority(piece) == level:
                    yield piece

    def deadline(self, piece: int) -> float | None:
        """No deadlines."""
        return None


_RANDOM_DRAWS = 16


class RandomFirst:
    """Random pieces until we have ``first`` pieces, then ``then``.

    >>> picker = PiecePicker(TorrentGeometry(8, 16384), random.Random(5), RandomFirst(first=1))
    >>> picker.add_peer("a"); picker.peer_have_all("a")
    >>> len(picker.pick("a", 1, now=0.0))
    1
    """

    __slots__ = ("first", "then")

    def __init__(self, then: Strategy | None = None, first: int = 4) -> None:
        """Random until ``first`` pieces are had, then ``then`` (default rarest first)."""
        if first < 0:
            raise LocalProtocolError(f"first must be at least 0, not {first}")
        self.then: Strategy = then if then is not None else RarestFirst()
        self.first = first

    def _active(self, picker: PiecePicker) -> bool:
        return picker.requests.num_have < self.first

    def tier(self, piece: int, picker: PiecePicker) -> Tier:
        """Priority while random; then the next strategy's tiers."""
        if self._active(picker):
            return (-picker.availability.priority(piece),)
        return self.then.tier(piece, picker)

    def rank(self, piece: int, picker: PiecePicker) -> Tier:
        """Nothing while random (a started piece always comes first: the first piece
        to trade is wanted soonest); then the next strategy's rank."""
        if self._active(picker):
            return ()
        return self.then.rank(piece, picker)

    def order(self, picker: PiecePicker, peer: PeerKey) -> Iterator[int]:
        """A random order within each priority while random; then the next strategy's."""
        if not self._active(picker):
            return self.then.order(picker, peer)
        return self._random_order(picker, peer)

    def _random_order(self, picker: PiecePicker, peer: PeerKey) -> Iterator[int]:
        availability = picker.availability
        rng = picker.rng
        levels = availability.priority_levels()
        if not levels:
            return
        top = levels[0]
        # A few random draws find a piece at once when the peer has a fair share of
        # what we want (the usual case); only then pay for the full shuffled list.
        drawn: set[int] = set()
        n = availability.num_pieces
        for _ in range(_RANDOM_DRAWS):
            piece = rng.randrange(n)
            if (
                piece not in drawn
                and availability.priority(piece) == top
                and availability.peer_has(peer, piece)
            ):
                drawn.add(piece)
                yield piece
        pieces = [p for p in availability.iter_wanted(peer) if p not in drawn]
        rng.shuffle(pieces)
        pieces.sort(key=lambda p: -availability.priority(p))  # stable: random within
        yield from pieces

    def deadline(self, piece: int) -> float | None:
        """The next strategy's deadlines."""
        return self.then.deadline(piece)


class Streaming:
    """Pieces with deadlines first (earliest first), then ``then``.

    A deadline piece goes to a peer that can deliver it in time at its measured rate.
    When none can, a peer takes it unless another that has it and could be asked for it
    now would deliver sooner, queues counted (:attr:`PiecePicker.askable`: under a
    :class:`~bip_select.SwarmBrain`, a peer that unchokes us or allows the piece fast,
    is not snubbed, has at most twice its queue out and, on parole, may take the
    piece). A block that its peer will not deliver before the deadline is asked again of
    a faster peer (the picker's deadline duplicates).

    >>> s = Streaming()
    >>> picker = PiecePicker(TorrentGeometry(4, 16384), random.Random(0), s)
    >>> s.set_deadline(3, 10.0)
    >>> picker.add_peer("a"); picker.peer_have_all("a")
    >>> [b.piece for b in picker.pick("a", 2, now=0.0)]
    [3, 0]
    """

    __slots__ = ("_by_time", "_deadlines", "then")

    def __init__(self, then: Strategy | None = None) -> None:
        """Deadline pieces first, then ``then`` (default sequential)."""
        self.then: Strategy = then if then is not None else Sequential()
        self._deadlines: dict[int, float] = {}
        # (when, piece) by time, sorted when first needed after a change: every pick walks
        # it, and a player sets its deadlines in bursts between picks.
        self._by_time: list[tuple[float, int]] | None = []

    def set_deadline(self, piece: int, when: float) -> None:
        """``piece`` is needed by time ``when``."""
        if type(piece) is not int or piece < 0:
            raise LocalProtocolError(f"bad piece {piece!r}")
        self._deadlines[piece] = float(when)
        self._by_time = None

    def clear_deadline(self, piece: int) -> None:
        """``piece`` is no longer urgent (had, or the viewer moved on)."""
        if self._deadlines.pop(piece, None) is not None:
            self._by_time = None

    def clear_deadlines(self) -> bool:
        """No piece is urgent any more; returns whether one was."""
        had = bool(self._deadlines)
        self._deadlines.clear()
        self._by_time = []
        return had

    def deadlines(self) -> Mapping[int, float]:
        """Every pending deadline."""
        return dict(self._deadlines)

    def deadline(self, piece: int) -> float | None:
        """When ``piece`` is needed, if it has a deadline."""
        found = self._deadlines.get(piece)
        return found if found is not None else self.then.deadline(piece)

    def tier(self, piece: int, picker: PiecePicker) -> Tier:
        """``(0, deadline)`` for deadline pieces; the next strategy's tier after them."""
        when = self._deadlines.get(piece)
        if when is not None:
            return (0.0, when)
        return (1.0, *self.then.tier(piece, picker))

    def rank(self, piece: int, picker: PiecePicker) -> Tier:
        """Nothing for deadline pieces; the next strategy's rank for the others."""
        if piece in self._deadlines:
            return ()
        return self.then.rank(piece, picker)

    def order(self, picker: PiecePicker, peer: PeerKey) -> Iterator[int]:
        """Deadline pieces ``peer`` has by deadline, then the next strategy's order."""
        availability = picker.availability
        by_time = self._by_time
        if by_time is None:
            by_time = self._by_time = sorted((when, p) for p, when in self._deadlines.items())
        n = availability.num_pieces
        for _, piece in by_time:
            if piece < n and availability.priority(piece) and availability.peer_has(peer, piece):
                yield piece
        for piece in self.then.order(picker, peer):
            if piece not in self._deadlines:
                yield piece


_MAX_DEADLINE_COPIES = 3  # a late block is asked of at most this many peers at once
# How long a parole peer's time-out, or its reject while it unchokes us, keeps it off the
# piece (see ``block_timed_out``, ``block_rejected``): long enough for the other holders to
# fetch it (a silent parole peer then costs one request time-out in every few minutes),
# short enough that a piece nobody else will send us (they choke us, or time out too) goes
# back to the parole peer rather than stalling for ever.
_FORFEIT_TIME = 120.0
# Forfeits remembered per piece (one per parole peer that forfeited it): beyond that the one
# expiring first is forgotten (its peer may take the piece back early, costing at worst one
# more time-out).
_MAX_FORFEITS_PER_PIECE = 8
# Forfeits remembered per parole peer: beyond that its oldest is forgotten (it may take that
# piece back early, costing one more time-out or reject). A peer rejecting every request
# forfeits a piece at every refill: bounded per piece only, eight of them could make us keep
# eight records for each of 100,000 pieces (some 60 MB); so, parole peers times this.
_MAX_FORFEITS_PER_PEER = 64
# Blocks remembered per peer as cancelled at a time-out and not answered yet (not asked of it
# again meanwhile): beyond that its oldest is forgotten (a peer that answers none of them,
# one without BEP 6 say, could otherwise make us keep one per time-out for ever), though
# never one cancelled in the current step (a snub cancels the peer's whole queue at once).
_MAX_UNANSWERED_PER_PEER = 64

_NO_BLOCKS: frozenset[Block] = frozenset()


class _Unanswered:
    """The requests of one peer cancelled at a time-out that it has not answered yet."""

    __slots__ = ("before", "blocks")

    def __init__(self) -> None:
        """None yet."""
        # block -> until when it is not asked of the peer again, oldest first
        self.blocks: dict[Block, float] = {}
        # The peer's requests at its latest time-out (asked before the cancel): an answer
        # to any other of its requests says no answer to the cancels is coming.
        self.before: set[Block] = set()


def _first(pair: tuple[float, PeerKey]) -> float:
    """The sort key of an ``(eta, peer)`` pair: peer keys need not be comparable."""
    return pair[0]


class PiecePicker:
    """Decides which blocks to request from which peer (see the module docstring)."""

    __slots__ = (
        "_allowed_fast",
        "_exclusive",
        "_first_hint",
        "_forfeited",
        "_forfeits_of",
        "_priority",
        "_rates",
        "_timed_out",
        "askable",
        "availability",
        "chokes_us",
        "endgame_depth",
        "geometry",
        "requests",
        "rng",
        "strategy",
    )

    def __init__(
        self,
        geometry: TorrentGeometry,
        rng: random.Random,
        strategy: Strategy | None = None,
        *,
        have: Iterable[int] = (),
        priorities: Sequence[int] | None = None,
        endgame_depth: int = 1,
    ) -> None:
        """Pick for a torrent of ``geometry``; ``have`` lists pieces already verified.

        Args:
            geometry: the torrent's pieces and blocks.
            rng: every random choice (tie-breaking, random first) comes from it.
            strategy: the piece order (default :class:`RarestFirst`).
            have: pieces already verified.
            priorities: one priority (0..7) per piece; default 4 for all.
            endgame_depth: in end-game, a peer is given duplicate requests only while it
                has fewer than this many requests pending. The default 1 is libtorrent's
                rule (request_blocks.cpp: one busy block, and only to a peer with nothing
                else pending); 2 wasted about half as much again in the swarm simulator and
                finished no sooner.
        """
        if endgame_depth < 1:
            raise LocalProtocolError(f"endgame_depth must be at least 1, not {endgame_depth}")
        self.endgame_depth = endgame_depth
        self.geometry = geometry
        self.rng = rng
        self.strategy: Strategy = strategy if strategy is not None else RarestFirst()
        self.availability = Availability(geometry.num_pieces, rng)
        self.requests = RequestBook(geometry, have)
        n = geometry.num_pieces
        self._first_hint = 0
        if priorities is None:
            self._priority = bytearray([DEFAULT_PRIORITY]) * n
        else:
            if len(priorities) != n:
                raise LocalProtocolError(f"{len(priorities)} priorities for {n} pieces")
            self._priority = bytearray(_check_priority(p) for p in priorities)
        for piece in range(n):
            self._sync(piece)
        self._allowed_fast: dict[PeerKey, set[int]] = {}
        self._rates: dict[PeerKey, float] = {}
        self._exclusive: dict[int, PeerKey] = {}  # piece -> the parole peer that owns it
        # piece -> {parole peer whose request of it timed out or was rejected while it
        # unchoked us: until when it may not take the piece back}, one per peer (a second
        # parole peer's forfeit must not clear the first's): see :meth:`block_timed_out`,
        # :meth:`block_rejected`
        self._forfeited: dict[int, dict[PeerKey, float]] = {}
        # The same records by peer: {peer: {piece: None}}, oldest first (the per-peer bound,
        # and a departing peer's records found without a scan of every piece).
        self._forfeits_of: dict[PeerKey, dict[int, None]] = {}
        # peer -> the blocks cancelled at it at a time-out that it has not answered yet
        # (block, reject, drop): not asked of it again meanwhile (see
        # :meth:`block_timed_out`); at most ``_MAX_UNANSWERED_PER_PEER`` per peer, plus
        # one step's cancels.
        self._timed_out: dict[PeerKey, _Unanswered] = {}
        self.askable: Callable[[PeerKey, int, float], bool] | None = None
        """``askable(peer, piece, now)``: whether ``peer`` could be asked for ``piece`` at
        ``now`` (it unchokes us or allows the piece fast, is not snubbed, may take the piece
        on parole...), for deadline decisions (:class:`SwarmBrain` sets it). ``None``: every
        peer that has the piece could."""
        self.chokes_us: Callable[[PeerKey], bool] | None = None
        """``chokes_us(peer)``: whether ``peer`` chokes us (:class:`SwarmBrain` sets it), for
        the parole rules: a holder that chokes us is not kept holding a piece nothing of
        which is asked of it (:meth:`block_received`), nor counted, allowing the piece
        nothing fast, as a peer to ask for a forfeited piece. ``None``: none does."""

    # -- wanted pieces and priorities --------------------------------------------------

    def _sync(self, piece: int) -> None:
        wanted = self._priority[piece] and not self.requests.have(piece)
        self.availability.set_priority(piece, self._priority[piece] if wanted else 0)
        self.requests.set_wanted(piece, bool(self._priority[piece]))  # for in_endgame
        if wanted and piece < self._first_hint:
            self._first_hint = piece

    def wants(self, piece: int) -> bool:
        """Whether ``piece`` is still to download (not had, priority above 0)."""
        return bool(self.availability.priority(piece))

    def piece_priority(self, piece: int) -> int:
        """The priority set for ``piece`` (0..7), had or not."""
        self.geometry.check_piece(piece)
        return self._priority[piece]

    def set_piece_priority(self, piece: int, priority: int) -> None:
        """Set one piece's priority (0 = do not download)."""
        self.geometry.check_piece(piece)
        self._priority[piece] = _check_priority(priority)
        self._sync(piece)

    def set_piece_priorities(self, priorities: Mapping[int, int] | Sequence[int]) -> None:
        """Set several pieces' priorities: a mapping, or one per piece."""
        items = priorities.items() if isinstance(priorities, Mapping) else enumerate(priorities)
        checked = [(piece, _check_priority(p)) for piece, p in items]
        for piece, _ in checked:
            self.geometry.check_piece(piece)
        for piece, priority in checked:
            self._priority[piece] = priority
            self._sync(piece)

    def set_file_priorities(self, priorities: Sequence[int]) -> None:
        """Set every piece's priority from per-file ones (a piece takes its files' highest)."""
        self.set_piece_priorities(self.geometry.piece_priorities(priorities))

    def priority_levels(self) -> list[int]:
        """The priorities wanted pieces have, highest first."""
        return self.availability.priority_levels()

    def first_wanted(self) -> int:
        """The lowest wanted piece index (``num_pieces`` when nothing is wanted)."""
        # Amortised O(1): the hint only moves forward, and moves back when a piece
        # below it becomes wanted again (_sync), so each piece is skipped once per
        # time it stops being wanted.
        availability = self.availability
        n = availability.num_pieces
        piece = self._first_hint
        while piece < n and not availability.priority(piece):
            piece += 1
        self._first_hint = piece
        return piece

    def is_complete(self) -> bool:
        """Whether every wanted piece is had (a seed, or done with the chosen files)."""
        return self.availability.num_wanted == 0

    # -- peers ---------------------------------------------------------------------------

    def add_peer(self, peer: PeerKey) -> None:
        """A peer connected (it has nothing yet)."""
        self.availability.add_peer(peer)

    def remove_peer(self, peer: PeerKey) -> list[Block]:
        """A peer left: forget it; returns the requests it had pending (now free)."""
        self.availability.remove_peer(peer)
        self._allowed_fast.pop(peer, None)
        self._rates.pop(peer, None)
        self._release_exclusive(peer)
        self._timed_out.pop(peer, None)
        for piece in list(self._forfeits_of.get(peer, ())):
            self._unforfeit(piece, peer)
        return self.requests.drop_peer(peer)

    def peer_bitfield(self, peer: PeerKey, pieces: Iterable[int]) -> None:
        """``peer`` sent its bitfield (a late one replaces what it had: its parole holds
        on pieces it no longer has end, see :meth:`peer_dont_have`)."""
        self.availability.bitfield(peer, pieces)
        if self._exclusive:
            peer_has = self.availability.peer_has
            for owned in [p for p, owner in self._exclusive.items() if owner == peer]:
                if not peer_has(peer, owned):
                    del self._exclusive[owned]

    def peer_have(self, peer: PeerKey, piece: int) -> bool:
        """``peer`` announced ``piece``; returns whether we want it (become interested)."""
        self.availability.have(peer, piece)
        return _is_piece(piece, self.geometry.num_pieces) and self.wants(piece)

    def peer_have_all(self, peer: PeerKey) -> None:
        """``peer`` has everything."""
        self.availability.have_all(peer)

    def peer_have_none(self, peer: PeerKey) -> None:
        """``peer`` has nothing (its parole holds end, see :meth:`peer_dont_have`)."""
        self.availability.have_none(peer)
        self._release_exclusive(peer)

    def peer_dont_have(self, peer: PeerKey, piece: int) -> bool:
        """``peer`` lost ``piece`` (its pending requests for it stay until rejected);
        returns whether it had it.

        A parole peer's hold on the piece ends: it can no longer finish it, and a hold
        kept after our own cancel (:meth:`block_cancelled`) would otherwise bar every
        other peer from the piece for ever.
        """
        if not _is_piece(piece, self.geometry.num_pieces):
            return False  # the peer's nonsense (not even hashable, maybe): ignored
        if self._exclusive.get(piece) == peer:
            del self._exclusive[piece]
        return self.availability.dont_have(peer, piece)

    def allowed_fast(self, peer: PeerKey, piece: int) -> bool:
        """``peer`` lets us request ``piece`` while it chokes us (BEP 6); returns whether
        that is news (a piece outside the torrent, one allowed already, or one past the
        :data:`MAX_ALLOWED_FAST` kept is not)."""
        if not _is_piece(piece, self.geometry.num_pieces):
            return False  # the peer's nonsense: ignored
        allowed = self._allowed_fast.setdefault(peer, set())
        if piece in allowed or len(allowed) >= MAX_ALLOWED_FAST:
            return False
        allowed.add(piece)
        return True

    def revoke_allowed_fast(self, peer: PeerKey, piece: int) -> bool:
        """``piece`` is no longer allowed fast from ``peer`` (it rejected a request for it
        while choking us: libtorrent's ``incoming_reject_request`` does the same, or we
        would ask it again at once, forever); returns whether it was allowed."""
        allowed = self._allowed_fast.get(peer)
        if allowed is None or piece not in allowed:
            return False
        allowed.discard(piece)
        return True

    def is_allowed_fast(self, peer: PeerKey, piece: int) -> bool:
        """Whether ``peer`` lets us request ``piece`` while it chokes us (BEP 6): it said
        so (:meth:`allowed_fast`) and is still connected. O(1)."""
        allowed = self._allowed_fast.get(peer)
        return (
            allowed is not None and _is_piece(piece, self.geometry.num_pieces) and piece in allowed
        )

    def set_rate(self, peer: PeerKey, rate: float) -> None:
        """``peer``'s measured download rate (bytes/s), for deadline decisions."""
        self._rates[peer] = rate

    def is_interesting(self, peer: PeerKey) -> bool:
        """Whether ``peer`` has a piece we want."""
        return next(iter(self.availability.iter_wanted(peer)), None) is not None

    def peer_choked(
        self, peer: PeerKey, fast: bool, keep: Callable[[Block], bool] | None = None
    ) -> list[Block]:
        """``peer`` choked us. Without the fast extension every pending request is gone
        (returns them) but those ``keep(block)`` spares (blocks that arrived and wait for
        our disk: they are served); with it, requests stay until rejected (returns nothing).

        A parole peer's holds end with its requests (see ``pick``'s ``exclusive``): with
        the fast extension each reject ends its own; a piece held with nothing asked of the
        peer (the blocks it was asked received, the next not asked yet) is let go at once,
        unless allowed fast, since no reject would ever free it. The peer takes it back
        once it unchokes us if nobody else worked on it meanwhile.
        """
        if fast:
            self._release_idle(peer)
            return []
        self._timed_out.pop(peer, None)  # no BEP 6: no answer to our cancels will come
        self._release_exclusive(peer)
        return self.requests.drop_peer(peer, keep)

    # -- blocks ------------------------------------------------------------------------

    def block_received(self, peer: PeerKey, block: Block) -> Received | None:
        """A block arrived (see :meth:`RequestBook.receive`).

        When the parole peer holding the block's piece chokes us (:attr:`chokes_us`), its
        hold ends once nothing of the piece is asked of it (this block was its last, or
        another peer's copy settled its request) and the piece is not allowed fast, as at the
        choke itself (:meth:`peer_choked`): no reject would ever end it, and no other peer
        could finish the piece.
        """
        if not _is_piece(block.piece, self.geometry.num_pieces):
            return self.requests.receive(peer, block)  # not a block of ours: None
        if self._forfeited:
            self._unforfeit(block.piece, peer)  # it delivers that piece again
        if self._timed_out:
            self._answered(peer, block)
        received = self.requests.receive(peer, block)
        holder = self._exclusive.get(block.piece)
        chokes_us = self.chokes_us
        if holder is not None and chokes_us is not None and chokes_us(holder):
            self._release_idle(holder, block.piece)
        return received

    def holder(self, piece: int) -> PeerKey | None:
        """The parole peer that holds ``piece`` (only it may be asked for it), or None.
        O(1)."""
        return self._exclusive.get(piece) if _is_piece(piece, self.geometry.num_pieces) else None

    def block_rejected(self, peer: PeerKey, block: Block, now: float | None = None) -> bool:
        """``peer`` rejected ``block``: it is free again (for anyone); returns whether it
        was pending.

        A parole peer's hold on the piece ends. With ``now`` (the peer unchokes us: it
        could send the block and would not) the piece is also forfeited, as at a time-out
        (:meth:`block_timed_out`): otherwise a parole peer rejecting every request, refilled
        first, would take the piece straight back at every reject, for ever (end-game never
        duplicates a held piece). Without it (the peer chokes us: its rejects say only that
        the choke dropped the requests, BEP 6) the peer may take the piece back once it
        unchokes us, if nobody else worked on it meanwhile.

        A reject of a block not pending changes nothing: it is the one BEP 6 has the peer
        send for our own cancel, or for a request already timed out, and must not end the
        hold that :meth:`block_cancelled` kept; it answers a time-out's cancel, though: the
        block may be asked of the peer again (:meth:`block_timed_out`).
        """
        if self._timed_out:
            self._answered(peer, block)
        if not self.requests.reject(peer, block):
            return False
        piece = block.piece
        if now is not None and self._exclusive.get(piece) == peer:
            del self._exclusive[piece]
            self._forfeit(piece, peer, now)
        self._release_exclusive(peer, piece)
        return True

    def block_timed_out(self, peer: PeerKey, block: Block, now: float | None = None) -> bool:
        """The request of ``block`` to ``peer`` timed out at ``now`` (None: when it was
        sent): it is free again (for anyone).

        A parole peer's hold on the piece ends, and the piece is *forfeited*: the peer
        may not take it back (see ``pick``'s ``exclusive``), started or not, while another
        peer has it, until it delivers a block of it again or two minutes have passed.
        Otherwise a stalled parole peer, refilled first, would take the piece straight
        back at every time-out, for ever (one that sent nothing of it even as a fresh
        piece: its requests gone, the piece is no longer started).

        The block is not asked of the peer again until the peer answers it (sends it,
        rejects it, or we drop its copy), chokes us without the fast extension, or leaves:
        with BEP 6 its reject of our cancel would read as a reject of the new request
        (libtorrent keeps a timed-out block in the peer's queue, never asking it twice).
        Nor once it answers a request we sent after the cancel (a peer answers in order:
        an answer to the cancel would have come first; one without BEP 6 sends none), nor
        after two minutes, as for a forfeit: a peer that never answers must not keep a
        block it alone has from us for ever. Only with ``now`` (the caller's step).
        """
        piece = block.piece
        step = now  # the caller's step (None: none given)
        if self._exclusive.get(piece) == peer:
            if now is None:
                now = self.requests.outstanding(peer).get(block, 0.0)
            del self._exclusive[piece]
            self._forfeit(piece, peer, now)
        timed_out = self.requests.time_out(peer, block)
        if timed_out and step is not None:
            record = self._timed_out.get(peer)
            if record is None:
                record = self._timed_out[peer] = _Unanswered()
            blocks = record.blocks
            blocks.pop(block, None)  # re-recorded below: its newest
            until = step + _FORFEIT_TIME
            if len(blocks) >= _MAX_UNANSWERED_PER_PEER:
                oldest = next(iter(blocks))
                # Never one of this very step's: a snub cancels all the peer's requests at
                # once, and the same step's refill must ask it for none of them. This step's
                # are bounded by the peer's queue, the earlier ones by the bound.
                if blocks[oldest] < until:
                    del blocks[oldest]
            blocks[block] = until
            record.before = set(self.requests.outstanding(peer))  # asked before the cancel
        return timed_out

    def _answered(self, peer: PeerKey, block: Block) -> None:
        """``peer`` answered ``block`` (sent, rejected or dropped; called before the request
        book settles it): if its request had timed out, it may be asked of the peer again;
        if it was asked after our last cancel, every block cancelled may."""
        record = self._timed_out.get(peer)
        if record is None:
            return
        blocks = record.blocks
        if block in blocks:
            del blocks[block]
        elif block not in record.before and block in self.requests.outstanding(peer):
            blocks.clear()  # answered in order: no answer to the cancels is coming
        if not blocks:
            del self._timed_out[peer]

    def _forfeit(self, piece: int, peer: PeerKey, now: float) -> None:
        """``peer`` (on parole) may not take ``piece`` back until ``now`` plus
        ``_FORFEIT_TIME`` (see ``pick``'s ``exclusive``). Another parole peer's forfeit of
        the same piece stays; at most ``_MAX_FORFEITS_PER_PIECE`` are kept per piece (the
        expired ones go first, else the one expiring first) and ``_MAX_FORFEITS_PER_PEER``
        per peer (its oldest goes)."""
        self._unforfeit(piece, peer)  # re-recorded below: its newest
        peers = self._forfeited.get(piece)
        if peers is not None and len(peers) >= _MAX_FORFEITS_PER_PIECE:
            expired = [other for other, until in peers.items() if now >= until]
            for other in expired or [min(peers, key=peers.__getitem__)]:
                self._unforfeit(piece, other)
        mine = self._forfeits_of.get(peer)
        if mine is not None and len(mine) >= _MAX_FORFEITS_PER_PEER:
            self._unforfeit(next(iter(mine)), peer)
        self._forfeited.setdefault(piece, {})[peer] = now + _FORFEIT_TIME
        self._forfeits_of.setdefault(peer, {})[piece] = None

    def _unforfeit(self, piece: int, peer: PeerKey) -> None:
        """``peer``'s forfeit of ``piece`` (if any) is over."""
        peers = self._forfeited.get(piece)
        if peers is None or peers.pop(peer, None) is None:
            return
        if not peers:
            del self._forfeited[piece]
        mine = self._forfeits_of[peer]
        del mine[piece]
        if not mine:
            del self._forfeits_of[peer]

    def _drop_forfeits(self, piece: int) -> None:
        """Every forfeit of ``piece`` is over (it was verified, good or bad)."""
        for peer in list(self._forfeited.get(piece, ())):
            self._unforfeit(piece, peer)

    def block_cancelled(self, peer: PeerKey, block: Block, *, choked: bool = False) -> bool:
        """We cancelled ``block`` at ``peer`` (its piece is no longer wanted): it is free
        again; returns whether it was pending.

        A parole peer's hold on the piece stays (the cancel is not its doing; once the
        piece is wanted again only it may finish it, so a bad hash stays its alone),
        unless ``choked``: the peer chokes us (with the fast extension), so nothing more
        can be asked of it; with no other block of the piece asked of it (no reject to
        come) and the piece not allowed fast, the hold ends, as at the choke itself
        (:meth:`peer_choked`).
        """
        cancelled = self.requests.cancel(peer, block)
        if choked:
            self._release_idle(peer, block.piece)
        return cancelled

    def block_dropped(self, peer: PeerKey, block: Block, *, choked: bool = False) -> bool:
        """``peer`` sent ``block`` and we dropped it (our disk could not take it): it is
        free again; returns whether it was pending.

        A parole peer's hold on the piece stays, as for :meth:`block_cancelled` (and
        ``choked`` alike): the drop is ours, so the block is asked of the parole peer
        again, and no other peer's data enters its piece (a mixed piece that failed would
        cost an honest peer trust and spare the suspect a ban as sole contributor).
        """
        if self._timed_out:
            self._answered(peer, block)
        dropped = self.requests.reject(peer, block)
        if choked:
            self._release_idle(peer, block.piece)
        return dropped

    def _release_exclusive(self, peer: PeerKey, piece: int | None = None) -> None:
        """A parole peer that stops delivering loses its pieces to the others: keeping
        them would stall the download (and end-game never starts while blocks are free).

        A reject of a pending block, a choke without the fast extension and a departure
        come through here (a time-out too, which also forfeits the piece, as a reject while
        the peer unchokes us does: :meth:`block_timed_out`, :meth:`block_rejected`); our own
        cancel or drop does not end a hold (:meth:`block_cancelled`,
        :meth:`block_dropped`) unless the peer chokes us, and a choke with the fast
        extension ends the holds with nothing asked (:meth:`peer_choked`).
        """
        if piece is not None:
            if self._exclusive.get(piece) == peer:
                del self._exclusive[piece]
            return
        for owned in [p for p, owner in self._exclusive.items() if owner == peer]:
            del self._exclusive[owned]

    def _release_idle(self, peer: PeerKey, piece: int | None = None) -> None:
        """``peer`` chokes us (fast extension): its holds on ``piece`` (None: every piece)
        end where nothing of the piece is asked of it and it is not allowed fast. No reject
        would ever end them, and they bar every other peer from the piece for as long as
        the peer chokes us."""
        exclusive = self._exclusive
        if piece is None:
            held = [p for p, owner in exclusive.items() if owner == peer]
        else:
            held = [piece] if exclusive.get(piece) == peer else []
        if not held:
            return
        allowed = self._allowed_fast.get(peer, ())
        for owned in held:
            if not self.requests.is_asked_of(owned, peer) and owned not in allowed:
                del self._exclusive[owned]

    def piece_passed(self, piece: int) -> tuple[PeerKey, ...]:
        """``piece`` hashed good; returns the peers that sent it."""
        sources = self.requests.piece_passed(piece)
        self._exclusive.pop(piece, None)
        self._drop_forfeits(piece)
        self._sync(piece)
        for streaming in streaming_layers(self.strategy):  # a deadline met is forgotten
            streaming.clear_deadline(piece)
        return sources

    def piece_failed(self, piece: int) -> tuple[PeerKey, ...]:
        """``piece`` hashed bad: download it again; returns the peers that sent it."""
        self._exclusive.pop(piece, None)
        self._drop_forfeits(piece)
        return self.requests.piece_failed(piece)

    def lose_piece(self, piece: int) -> None:
        """A piece we had is gone (a storage error, a failed recheck): want it again."""
        self.requests.lose_piece(piece)
        self._sync(piece)

    def in_endgame(self) -> bool:
        """Whether every block of every wanted piece is received or asked of someone. O(1):
        the request book counts the wanted pieces with no free block as blocks change hands
        (every end-game pick and received block asks)."""
        wanted = self.availability.num_wanted
        return bool(wanted) and self.requests.num_full == wanted

    # -- picking -----------------------------------------------------------------------

    def _eta(self, peer: PeerKey, now: float, extra: int = 1) -> float:
        rate = self._rates.get(peer, 0.0)
        if rate <= 0:
            return float("inf")
        return now + (self.requests.num_outstanding(peer) + extra) * BLOCK_SIZE / rate

    def _rivals(self, peer: PeerKey, now: float) -> list[tuple[float, PeerKey]]:
        """The other peers with a rate, as ``(when they would deliver a block, peer)``,
        soonest first, for :meth:`_deadline_ok` (built once per pick: the others' queues do
        not change while ``peer`` is picked for)."""
        eta = self._eta
        rivals = [(eta(other, now), other) for other, rate in self._rates.items() if rate > 0]
        rivals.sort(key=_first)
        return [(when, other) for when, other in rivals if other != peer]

    def _deadline_ok(
        self,
        peer: PeerKey,
        piece: int,
        when: float,
        now: float,
        rivals: Sequence[tuple[float, PeerKey]] | None = None,
    ) -> bool:
        """Whether ``peer`` should take a deadline piece: it can make it, or none can and
        no other peer that has the piece and could be asked for it now (:attr:`askable`)
        would deliver sooner, its queue counted (libtorrent's
        ``request_time_critical_pieces`` ranks by queue time among the peers it may ask).
        A faster peer that may not take the piece (on parole, choking us, snubbed) must
        not keep it from the others: the urgent piece would wait for ever.

        ``rivals``: :meth:`_rivals` for ``peer`` at ``now`` (built here if None). Only the
        rivals sooner than ``peer`` are walked, so a pick costs one sort of the peers with
        a rate, not a pass over them all for every deadline piece."""
        mine = self._eta(peer, now)
        if mine <= when:
            return True
        if piece in self._exclusive:
            return True  # held by ``peer`` (``pick`` checked): nobody else may take it
        if rivals is None:
            rivals = self._rivals(peer, now)
        peer_has = self.availability.peer_has
        askable = self.askable
        for eta, other in rivals:
            if eta >= mine:
                break  # sorted: no sooner rival further on
            if peer_has(other, piece) and (askable is None or askable(other, piece, now)):
                return False
        return True

    def pick(
        self,
        peer: PeerKey,
        count: int,
        now: float,
        *,
        choked: bool = False,
        exclusive: bool = False,
        on_parole: AbstractSet[PeerKey] | None = None,
        arrived: Callable[[PeerKey, Block], bool] | None = None,
    ) -> list[Block]:
        """Choose up to ``count`` blocks to request from ``peer`` and record them.

        Args:
            peer: the peer to ask.
            count: how many requests it has room for (see ``PeerQueues.room``).
            now: the current time (request times, deadlines).
            choked: the peer chokes us: only its allowed-fast pieces.
            exclusive: the peer is on parole: only pieces nobody else has blocks of,
                which it then keeps to itself, so a bad hash is its alone. A started piece
                nobody holds is its again if every block of it received or asked is its
                own (its hold ended with a choke or a reject; libtorrent's
                ``requested_from`` rule). A piece whose request of it timed out, or was
                rejected while the peer unchoked us, started or not, is not its again for
                a while if another peer has the piece (:meth:`block_timed_out`,
                :meth:`block_rejected`). It gets no end-game or deadline duplicates
                (libtorrent's pick_pieces: "don't double-pick anything if the peer is on
                parole"). Our own rule, not libtorrent's: no other peer gets end-game
                duplicates of a piece it holds, so that a bad piece bans it as sole
                contributor. The cost: the last pieces wait for the parole peer -- a
                silent one for up to a request time-out per held piece (the time-out
                ends the hold and forfeits the piece; a reject does at once), a slow one
                for as long as it takes to send it. A late deadline block is duplicated to
                a faster peer all the same (a missed deadline is a stall the user sees;
                the piece may then be mixed).
            on_parole: with ``exclusive``, the connected peers on parole (``peer`` among
                them or not), as a set: a parole pick asks it for membership and size,
                and walks it only for a started piece no more peers have than it holds. A
                started piece another peer worked on (one that left, say) is then the
                parole peer's to finish, and hold, if every other connected peer that has
                it is on parole: nobody else may ever finish it, and a stall is worse than
                a mixed piece (a bad hash then blames every contributor, and bans none as
                sole contributor). libtorrent has no such rule (its parole peers only pick
                pieces they alone worked on, whoever else is left). ``None``: never.
            arrived: ``arrived(other, block)``: whether ``block`` came from ``other`` and
                waits for our disk. Such a block gets no end-game or deadline duplicate:
                it is here, not late (libtorrent never re-requests a block being written).

        Returns:
            The blocks, already recorded as requested: send them in order.
        """
        if count <= 0 or self.availability.num_wanted == 0:
            return []
        availability = self.availability
        requests = self.requests
        strategy = self.strategy
        forfeited = self._forfeited
        # Cancelled at it at a time-out and not answered yet: not asked of it again.
        avoid: AbstractSet[Block] = _NO_BLOCKS
        record = self._timed_out.get(peer)
        if record is not None:
            unanswered = record.blocks
            for block in [b for b, until in unanswered.items() if now >= until]:
                del unanswered[block]  # waited long enough for its answer
            if unanswered:
                avoid = unanswered.keys()
            else:
                del self._timed_out[peer]
        allowed: Collection[int] | None = None
        if choked:
            allowed = self._allowed_fast.get(peer)
            if not allowed:
                return []

        rivals: list[tuple[float, PeerKey]] | None = None  # see _deadline_ok

        def usable(piece: int) -> bool:
            if allowed is not None and piece not in allowed:
                return False
            owner = self._exclusive.get(piece)
            if owner is not None and owner != peer:
                return False
            if exclusive and owner is None:
                forfeits = forfeited.get(piece)
                until = forfeits.get(peer) if forfeits is not None else None
                if until is not None and now >= until:
                    self._unforfeit(piece, peer)  # expired: the peer may try again
                verdict = self._parole_verdict(peer, piece, now, on_parole)
                if verdict is False:
                    return False
                if verdict is None:
                    unsure.add(piece)  # the count in ``take``, for the pieces the pick reaches
            when = strategy.deadline(piece)
            if when is None:
                return True
            nonlocal rivals
            if rivals is None and self._eta(peer, now) > when:
                rivals = self._rivals(peer, now)  # once per pick, when first needed
            return self._deadline_ok(peer, piece, when, now, rivals)

        picked: list[Block] = []
        unsure: set[int] = set()  # usable only if stranded: ``_stranded`` says

        def take(piece: int) -> None:
            if (
                on_parole is not None
                and piece in unsure
                and not self._stranded(piece, peer, on_parole)
            ):
                return
            need = count - len(picked)
            for block in requests.free_blocks(piece, need + len(avoid)):
                if block in avoid:
                    continue
                if len(picked) >= count:
                    break
                requests.request(peer, block, now)
                picked.append(block)
            if exclusive and picked and picked[-1].piece == piece:
                self._exclusive[piece] = peer

        # 1. Late deadline blocks: ask a faster peer too (never a parole peer).
        if not exclusive:
            self._deadline_duplicates(
                peer, count, now, allowed, picked, arrived=arrived, avoid=avoid
            )

        # 2. Started pieces first within a tier, then the strategy's fresh pieces.
        # A started piece beats a fresh one of the same tier and rank (libtorrent: a
        # downloading piece counts as slightly rarer), so started pieces get finished
        # without making a common piece jump ahead of a rarer one -- which would spend a
        # seed's upload on data the swarm already has (in a 50-leecher simulation,
        # preferring started pieces outright made the seed upload 1.7 copies before
        # every piece was out, against 1.3 this way). Once started pieces outnumber
        # the connected peers by half again, they come first outright (libtorrent's
        # threshold): memory stays bounded, and haves to trade come sooner.
        # In end-game (O(1) to tell) no wanted piece has a free block: nothing to walk.
        # Every end-game pick used to walk every started piece here for nothing.
        if not self.in_endgame():
            prefer_started = requests.num_started > max(4, 3 * availability.num_peers // 2)
            no_rank: Tier = ()
            keyed = []
            # Every block received runs this: the methods the loops call are looked up once.
            num_free, is_started = requests.num_free, requests.is_started
            priority, peer_has = availability.priority, availability.peer_has
            tier, rank_of = strategy.tier, strategy.rank
            for piece in requests.started_pieces():
                free = num_free(piece)
                if free and priority(piece) and peer_has(peer, piece) and usable(piece):
                    rank = no_rank if prefer_started else rank_of(piece, self)
                    keyed.append(((tier(piece, self), rank, 0, free), piece))
            keyed.sort()
            queue = iter(keyed)
            next_partial = next(queue, None)
            # A choked peer takes only its allowed-fast pieces: sort those few rather than
            # walk every wanted piece to filter them (each AllowedFast or reject runs a pick).
            fresh = (
                strategy.order(self, peer)
                if allowed is None
                else self._allowed_order(peer, allowed)
            )
            for piece in fresh:
                if len(picked) >= count:
                    break
                if is_started(piece) or not usable(piece):
                    continue
                rank = no_rank if prefer_started else rank_of(piece, self)
                fresh_key = (tier(piece, self), rank, 1)
                while next_partial is not None and next_partial[0] <= fresh_key:
                    take(next_partial[1])
                    if len(picked) >= count:
                        return picked
                    next_partial = next(queue, None)
                take(piece)
            while next_partial is not None and len(picked) < count:
                take(next_partial[1])
                next_partial = next(queue, None)

        # 3. End-game: every block is asked of someone; ask this peer too -- but only
        # a few at a time (libtorrent asks for a busy block only when the peer has
        # nothing else to do): each duplicate that loses the race is wasted upload.
        # Never to a parole peer (libtorrent's pick_pieces), nor -- our own rule -- of a
        # piece a parole peer holds: a duplicate that won the race would mix its piece, and
        # a bad one would no longer ban it as sole contributor (see ``exclusive`` for the
        # cost; its time-out or reject forfeits the piece, so a silent one is waited for
        # once, a rejecting one not at all).
        room = min(count, self.endgame_depth) - requests.num_outstanding(peer)
        if room > 0 and not exclusive and self.in_endgame():
            held = self._exclusive

            def has(piece: int) -> bool:
                return (
                    availability.peer_has(peer, piece)
                    and bool(availability.priority(piece))
                    and (allowed is None or piece in allowed)
                    and held.get(piece, peer) == peer
                )

            candidates = requests.duplicate_candidates(peer, has, room + len(avoid), arrived)
            for block in [b for b in candidates if b not in avoid][:room]:
                requests.request(peer, block, now, duplicate=True)
                picked.append(block)
        return picked

    def parole_may_take(
        self, peer: PeerKey, piece: int, now: float, on_parole: AbstractSet[PeerKey]
    ) -> bool:
        """Whether ``peer``, on parole, may be asked for ``piece`` at ``now`` by the rules
        of :meth:`pick`'s ``exclusive`` and ``on_parole``: no other peer holds it, its own
        forfeit of it is over (or nobody else has the piece), no other parole peer forfeited
        it lately while a peer not on parole could be asked for it, and nobody else worked on
        it unless only parole peers are left to finish it. Changes nothing; O(peers on the
        piece), O(parole peers) when only they may be left."""
        owner = self._exclusive.get(piece)
        if owner is not None:
            return owner == peer
        verdict = self._parole_verdict(peer, piece, now, on_parole)
        return self._stranded(piece, peer, on_parole) if verdict is None else verdict

    def _parole_verdict(
        self, peer: PeerKey, piece: int, now: float, on_parole: AbstractSet[PeerKey] | None
    ) -> bool | None:
        """The parole rules for ``peer`` and ``piece``, no other peer holding it (one place
        for :meth:`pick`'s ``usable`` and :meth:`parole_may_take`): False if it may not take
        it, True if it may, None if only when stranded (``_stranded``, the costly half, says).

        Its own forfeit (its request of it timed out or was rejected) bars it while another
        peer could send the piece; another parole peer's forfeit bars it while a peer not on
        parole could be asked for it now (silent parole peers would otherwise pass it round
        for ever, each taking it at the last one's time-out; a holder that chokes us must not
        strand it); another peer's data in it, or a request of it to another, bars it unless
        only parole peers are left to finish it. Changes nothing."""
        forfeits = self._forfeited.get(piece)
        if forfeits is not None:
            until = forfeits.get(peer)
            if until is not None and now < until and self.availability.count(piece) > 1:
                return False
            if self._forfeited_by_another(piece, peer, now) and (
                on_parole is None or self._askable_elsewhere(piece, peer, on_parole, now)
            ):
                return False
        requests = self.requests
        if requests.is_started(piece) and requests.worked_on_by_others(piece, peer):
            if on_parole is None or not self._maybe_stranded(piece, peer, on_parole):
                return False
            return None
        return True

    def _forfeited_by_another(self, piece: int, peer: PeerKey, now: float) -> bool:
        """Whether a parole peer other than ``peer`` forfeited ``piece`` until after ``now``
        (at most ``_MAX_FORFEITS_PER_PIECE`` to look at)."""
        return any(other != peer and now < until for other, until in self._forfeited[piece].items())

    def _askable_elsewhere(
        self, piece: int, peer: PeerKey, on_parole: AbstractSet[PeerKey], now: float
    ) -> bool:
        """Whether a peer other than ``peer``, not on parole, has ``piece`` and could be asked
        for it at ``now`` (it does not choke us, or allows the piece fast, and
        :attr:`askable` says so). O(peers): asked only of a piece another parole peer
        forfeited."""
        askable, chokes_us = self.askable, self.chokes_us
        return any(
            other != peer
            and other not in on_parole
            and (chokes_us is None or not chokes_us(other) or self.is_allowed_fast(other, piece))
            and (askable is None or askable(other, piece, now))
            for other in self.availability.holders(piece)
        )

    def _maybe_stranded(self, piece: int, peer: PeerKey, on_parole: AbstractSet[PeerKey]) -> bool:
        """The cheap half of ``_stranded``: False when a peer not in ``on_parole`` surely
        has ``piece`` (``_stranded`` is then False too). O(1) while more peers have the
        piece than are on parole (the usual case), else O(peers asked for a block of it)."""
        if self.availability.count(piece) > len(on_parole) + (peer not in on_parole):
            return False  # more peers have it than are on parole: one that is not does
        # One not on parole asked for a block of it, and still having it, finishes it (a
        # BEP 54 don't-have keeps the peer's requests: such an asker finishes nothing).
        peer_has = self.availability.peer_has
        return all(
            other == peer or other in on_parole or not peer_has(other, piece)
            for other in self.requests.askers(piece)
        )

    def _stranded(self, piece: int, peer: PeerKey, on_parole: AbstractSet[PeerKey]) -> bool:
        """Whether every connected peer but ``peer`` that has ``piece`` is in ``on_parole``
        (so none of them may finish a piece others worked on): the parole ones (and
        ``peer``) that have it are all of them. O(parole peers), never a pass over every
        peer; asked (by ``pick``) only of a piece ``_maybe_stranded`` let through that the
        pick would take."""
        availability = self.availability
        mine = peer not in on_parole and availability.peer_has(peer, piece)
        return availability.count_among(piece, on_parole) + mine >= availability.count(piece)

    def _allowed_order(self, peer: PeerKey, allowed: Collection[int]) -> Iterator[int]:
        """``peer``'s wanted allowed-fast pieces in the strategy's order (see the module
        docstring): O(a log a) for its ``a`` pieces, whatever the torrent's size."""
        availability = self.availability
        priority, peer_has = availability.priority, availability.peer_has
        mine = [p for p in allowed if priority(p) and peer_has(peer, p)]
        # Two stable sorts: the index's order first (rarest, then its random tie-break), so
        # that the strategy's (tier, rank) keeps it among equals, as its walk would.
        mine.sort(key=availability.wanted_key)
        tier, rank = self.strategy.tier, self.strategy.rank
        mine.sort(key=lambda piece: (tier(piece, self), rank(piece, self)))
        return iter(mine)

    def _deadline_duplicates(
        self,
        peer: PeerKey,
        count: int,
        now: float,
        allowed: Collection[int] | None,
        picked: list[Block],
        *,
        arrived: Callable[[PeerKey, Block], bool] | None = None,
        avoid: AbstractSet[Block] = _NO_BLOCKS,
    ) -> None:
        """Late blocks of started deadline pieces, asked of ``peer`` too when it would
        deliver them sooner (not those in ``avoid``: timed out at it, not answered yet). A
        parole peer's hold does not stop it (a missed deadline is a stall the user sees);
        ``pick`` never calls this for a parole peer."""
        if not self.has_deadlines():
            return
        deadline = self.strategy.deadline
        requests = self.requests
        availability = self.availability
        mine = self._eta(peer, now)
        if mine == float("inf"):
            return  # an unmeasured peer is no rescue
        urgent = []
        for piece in requests.started_pieces():
            when = deadline(piece)
            if (
                when is not None
                and availability.priority(piece)
                and availability.peer_has(peer, piece)
                and (allowed is None or piece in allowed)
            ):
                urgent.append((when, piece))
        urgent.sort()
        for when, piece in urgent:
            for block in self.geometry.blocks(piece):
                if len(picked) >= count:
                    return
                asked = requests.requesters(block)
                if not asked or peer in asked or len(asked) >= _MAX_DEADLINE_COPIES:
                    continue
                if block in avoid:
                    continue
                if arrived is not None and any(arrived(other, block) for other in asked):
                    continue  # it is here, waiting for our disk: not late
                arrival = min(self._arrival(other, block) for other in asked)
                eta = self._eta(peer, now, 1 + len(picked))
                # Late: its current peers will miss the deadline (or are overdue) and
                # this one would get it here sooner.
                if (arrival > when or arrival < now) and eta < arrival:
                    requests.request(peer, block, now, duplicate=True)
                    picked.append(block)

    def has_deadlines(self) -> bool:
        """Whether any :class:`Streaming` layer of the strategy holds a deadline (inner
        layers included; nothing copied)."""
        return any(streaming._deadlines for streaming in streaming_layers(self.strategy))

    def _arrival(self, peer: PeerKey, block: Block) -> float:
        """When ``block`` should arrive from ``peer`` at its rate, behind its queue."""
        rate = self._rates.get(peer, 0.0)
        pending = self.requests.outstanding(peer)
        sent = pending.get(block)
        if rate <= 0 or sent is None:
            return float("inf")
        position = 1
        for other in pending:
            if other == block:
                break
            position += 1
        return sent + position * BLOCK_SIZE / rate

    def check(self) -> None:
        """Verify the internal invariants (for tests)."""
        self.availability.check()
        self.requests.check()
        for piece in range(self.geometry.num_pieces):
            wanted = self._priority[piece] and not self.requests.have(piece)
            assert self.availability.priority(piece) == (self._priority[piece] if wanted else 0)
        pairs: set[tuple[int, PeerKey]] = set()
        for piece, peers in self._forfeited.items():
            assert 0 < len(peers) <= _MAX_FORFEITS_PER_PIECE
            pairs.update((piece, peer) for peer in peers)
        requests = self.requests
        full = sum(
            1 for p in requests.started_pieces() if self.wants(p) and not requests.num_free(p)
        )
        assert full == requests.num_full, (full, requests.num_full)
        for peer, record in self._timed_out.items():
            assert record.blocks  # (beyond the bound only by one step's cancels)
            assert self.availability.has_peer(peer)  # its record went with it
        for peer, pieces in self._forfeits_of.items():
            assert 0 < len(pieces) <= _MAX_FORFEITS_PER_PEER
            assert self.availability.has_peer(peer)  # its records went with it
            for piece in pieces:
                pairs.remove((piece, peer))
        assert not pairs, pairs


def streaming_layers(strategy: Strategy) -> Iterator[Streaming]:
    """The :class:`Streaming` strategies in ``strategy``'s ``then`` chain, outermost first."""
    layer: object = strategy
    while layer is not None:
        if isinstance(layer, Streaming):
            yield layer
        layer = getattr(layer, "then", None)


def _check_priority(priority: int) -> int:
    if type(priority) is not int or not 0 <= priority <= 7:
        raise LocalProtocolError(f"priority {priority!r} is not in 0..7")
    return priority


def _is_piece(piece: object, num_pieces: int) -> bool:
    return type(piece) is int and 0 <= piece < num_pieces
