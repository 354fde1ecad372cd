"""Piece revelation: what we tell each peer about the pieces we have, and when.

API (sans-IO; every method returns the actions to carry out, in order)::

    reveal = HonestRevelation(num_pieces, have=pieces_on_disk)
    # or LazyBitfield(num_pieces, have=..., rng=random.Random(seed))
    # or SuperSeeding(num_pieces, have=range(num_pieces), rng=random.Random(seed))
    reveal.peer_joined(peer, now, fast=True)   -> [SendBitfield | SendHaveAll | SendHaveNone...]
    reveal.peer_bitfield(peer, pieces, now)    -> [...]   # PeerBitfield
    reveal.peer_have(peer, piece, now)         -> [...]   # PeerHave
    reveal.peer_have_all(peer, now) / peer_have_none(peer, now) / peer_dont_have(peer, piece, now)
    reveal.piece_added(piece, now)             -> [SendHave...]   # PieceVerified(good=True)
    reveal.peer_left(peer)                     # PeerLeft / DropPeer
    reveal.tick(now)                           -> [SendHave...]   # delayed reveals now due
    reveal.next_deadline()                     # when tick next has something (or None)
    reveal.revealed(peer)                      # every piece this peer was told we have
    reveal.was_revealed(peer, piece)           # the same for one piece, O(1)
    reveal.adopt(peer, now, fast=..., pieces=..., seed=..., revealed=...)
                                               # take over a peer another strategy joined

The actions are the brain's own (:class:`~bip_select._actions.SendBitfield`,
:class:`~bip_select._actions.SendHave`, :class:`~bip_select._actions.SendHaveAll`,
:class:`~bip_select._actions.SendHaveNone`). No strategy ever claims a piece we do not have.

- :class:`HonestRevelation`: a bitfield at once (or *have all* / *have none* to a peer that
  speaks the fast extension, BEP 6), then a *have* to every peer for every piece verified good.
- :class:`LazyBitfield`: the bitfield leaves out a few of the pieces we have, and *haves* for
  those follow shortly after (some ISPs throttled connections whose first message is a full
  bitfield; Azureus and old libtorrent did this). The pieces left out and the delays come from
  the injected ``random.Random``, so a run is reproducible.
- :class:`SuperSeeding` (BEP 16) for an initial seeder: we pose as a peer with nothing, reveal
  to each peer one piece at a time (the rarest we know of, counting pieces already revealed and
  not yet seen elsewhere), and reveal it its next piece only once its current one has shown up
  at another peer (that peer's *have* or bitfield), so our upload goes to pieces the swarm
  spreads rather than to peers that only take.

A strategy can be switched on a running swarm (libtorrent's super-seeding flag, set or cleared
while peers are connected: :meth:`SwarmBrain.set_revelation
<bip_select.SwarmBrain.set_revelation>`): a fresh strategy takes over every peer with
:meth:`RevelationStrategy.adopt`, which is told what the peer has and what it was told, and never
sends a peer its first message again (a bitfield, *have all* or *have none* comes first or not
at all). What it was told stays told: :class:`HonestRevelation` and :class:`LazyBitfield` owe
it the rest of what we have, sent as haves paced at :data:`CATCH_UP_BATCH` per peer every
:data:`CATCH_UP_INTERVAL` seconds from :meth:`~RevelationStrategy.tick` (a thousand haves at
once would overflow a peer's send queue); :class:`SuperSeeding` takes a peer told everything
we have as honestly served (told each piece we verify later, never assigned one), and
super-seeds the others from what they were told.

A peer's nonsense (a have for a piece past the end) is ignored; the client's mistakes (a peer
that never joined, a piece outside the torrent) raise :class:`~bip_select.LocalProtocolError`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Collection, Iterable, Iterator
from typing import Final

from ._actions import Action, SendBitfield, SendHave, SendHaveAll, SendHaveNone
from ._errors import LocalProtocolError
from ._inputs import PeerKey

__all__ = [
    "CATCH_UP_BATCH",
    "CATCH_UP_INTERVAL",
    "HonestRevelation",
    "LazyBitfield",
    "RevelationStrategy",
    "SuperSeeding",
]

_MAX_PIECES: Final = 2**32  # a bitfield cannot name more (piece indices are 32-bit)

CATCH_UP_BATCH: Final = 128
"""Haves sent to one adopted peer per step, for the pieces it is owed (see
:meth:`RevelationStrategy.adopt`): a client's send queue holds a few hundred messages per peer
(bip's: about 800), which the haves of a large torrent sent at once would overflow."""

CATCH_UP_INTERVAL: Final = 0.1
"""Seconds between two steps of haves owed to adopted peers (:data:`CATCH_UP_BATCH` each):
1,280 haves (11.5 KB) per second and peer, so that a peer of a 10,000-piece torrent is told
everything in 8 seconds."""


_BIT_OFFSETS: Final = tuple(tuple(i for i in range(8) if byte >> i & 1) for byte in range(256))
"""The bits set in each byte value, lowest first (turns a byte of a :class:`_PieceBits` into
its pieces)."""

_NOT_FULL: Final = bytes([1] * 255 + [0])
"""A ``translate`` table: which bytes of a :class:`_PieceBits` lack a piece."""

_BYTES_PER_FEW: Final = 128
"""What a piece costs in a small ``set`` of pieces, in bytes, at the worst (its slots in the
hash table and its int object): a :class:`_PieceBits` keeps a set while that costs no more
than its bitset would."""


class _PieceBits:
    """A set of pieces of a torrent: a small ``set`` while there are few, else a bitset (bit
    ``piece % 8`` of byte ``piece // 8``).

    Every piece set a strategy keeps is one: what it told each peer, what each peer has (its
    bitfield is the peer's to fill: every piece, for all we can check) and what we have. Of a
    100,000-piece torrent a ``set`` of every piece holds about 4 MB, the bitset 12.5 KB
    (``num_pieces / 8`` bytes). A super-seed tells each peer a few pieces at first: those stay
    in a set of a few hundred bytes until the set would cost as much as the bitset (nothing at
    all while there are none). So each costs at most ``num_pieces / 8`` bytes and a constant.
    Adding, taking out and membership are O(1) (the switch to the bitset: once,
    O(num_pieces / 1024)); iteration is in piece order. The bitset stays once made, emptied or
    not (:meth:`clear` gives it back).

    Raises:
        LocalProtocolError: a piece added is outside ``0..num_pieces - 1`` (the strategy
            checks pieces before they get here: this is a bug of ours, never a peer's).
    """

    __slots__ = ("_bits", "_count", "_few", "_few_max", "_size")

    def __init__(self, num_pieces: int) -> None:
        self._size = num_pieces
        # Exactly one of the two holds the pieces: ``_few`` until ``_few_max`` is passed,
        # then ``_bits`` (both empty: none). Torrents under 1,024 pieces go straight to the
        # bitset, at most 128 bytes.
        self._few: set[int] | None = None
        self._bits = bytearray()
        self._few_max = ((num_pieces + 7) >> 3) // _BYTES_PER_FEW
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, piece: object) -> bool:
        # Anything but a piece of the torrent is not in (as with a set); a negative index
        # would count from the end, hence the sign test. A piece past the end raises
        # IndexError (the padding bits of the last byte are never set).
        if not isinstance(piece, int) or piece < 0:
            return False
        bits = self._bits
        if bits:
            try:
                return bool(bits[piece >> 3] >> (piece & 7) & 1)
            except IndexError:
                return False
        few = self._few
        return few is not None and piece in few

    def __iter__(self) -> Iterator[int]:
        few = self._few
        if few is not None:
            yield from sorted(few)
            return
        offsets = _BIT_OFFSETS
        for index, byte in enumerate(self._bits):
            if byte:  # runs of empty bytes are common while super-seeding: skip them whole
                base = index << 3
                for offset in offsets[byte]:
                    yield base + offset

    def add(self, piece: int) -> None:
        """Add ``piece`` (nothing if it is in already)."""
        bits = self._bits
        if bits and 0 <= piece < self._size:
            # The hot path (a have to every peer for every piece we verify): the bitset.
            index, mask = piece >> 3, 1 << (piece & 7)
            if not bits[index] & mask:
                bits[index] |= mask
                self._count += 1
            return
        if not 0 <= piece < self._size:
            raise LocalProtocolError(
                f"piece {piece!r} is outside the torrent (0..{self._size - 1})"
            )
        # No bitset yet: the small set, made on the first piece, or the bitset made now.
        few = self._few
        if few is None and self._few_max:
            few = self._few = set()
        if few is None:
            self._bits = bytearray((self._size + 7) >> 3)
            self.add(piece)
        elif piece not in few:
            few.add(piece)
            self._count += 1
            if len(few) > self._few_max:
                self._to_bits()

    def update(self, pieces: Iterable[int]) -> None:
        """Add every piece of ``pieces``."""
        for piece in pieces:
            self.add(piece)

    def discard(self, piece: int) -> None:
        """Take ``piece`` out (nothing if it is not in, or outside the torrent)."""
        bits = self._bits
        if bits:
            if 0 <= piece < self._size:
                index, mask = piece >> 3, 1 << (piece & 7)
                if bits[index] & mask:
                    bits[index] &= ~mask & 0xFF
                    self._count -= 1
            return
        few = self._few
        if few is not None and piece in few:
            few.discard(piece)
            self._count -= 1

    def clear(self) -> None:
        """Take every piece out, giving back the memory (a peer that sent *have all*)."""
        self._few = None
        self._bits = bytearray()
        self._count = 0

    def fill(self) -> None:
        """Add every piece of the torrent, in O(num_pieces / 8) at C speed."""
        size = self._size
        self._few = None
        bits = self._bits = bytearray(b"\xff") * ((size + 7) >> 3)
        if size & 7:
            bits[-1] = (1 << (size & 7)) - 1  # the padding bits stay clear (see __contains__)
        self._count = size

    def complement(self) -> Iterator[int]:
        """The pieces of the torrent not in the set, in piece order: full bytes of the bitset
        are skipped at C speed, so a set of nearly every piece costs O(num_pieces / 8) at C
        speed and O(missing) in Python."""
        bits, size = self._bits, self._size
        if not bits:
            few = self._few or ()
            yield from (piece for piece in range(size) if piece not in few)
            return
        flags = bits.translate(_NOT_FULL)
        index = flags.find(1)
        while index >= 0:
            base = index << 3
            for offset in _BIT_OFFSETS[~bits[index] & 0xFF]:
                if base + offset < size:  # (the padding bits of the last byte are clear)
                    yield base + offset
            index = flags.find(1, index + 1)

    def _to_bits(self) -> None:
        """Move the pieces from the set to the bitset (the set would cost more)."""
        few = self._few
        bits = self._bits = bytearray((self._size + 7) >> 3)
        self._few = None
        for piece in few or ():
            bits[piece >> 3] |= 1 << (piece & 7)


class _PeerView:
    """What we know a peer has, and what we told it we have."""

    __slots__ = (
        "announced",
        "assigned",
        "fast",
        "holding_since",
        "key",
        "pieces",
        "revealed",
        "seed",
        "told_all",
        "whole",
    )

    def __init__(self, key: PeerKey, fast: bool, num_pieces: int) -> None:
        self.key = key
        self.fast = fast
        self.pieces = _PieceBits(num_pieces)  # what the peer has (unless ``seed``)
        self.seed = False  # it sent have all: ``pieces`` is not filled in
        self.revealed = _PieceBits(num_pieces)  # what we told it we have
        self.assigned: int | None = None  # super-seeding: the piece awaiting propagation
        self.holding_since: float | None = None  # when the peer announced ``assigned`` itself
        # Super-seeding: the peer told us what it has (its first bitfield, have all, have
        # none or have; adopted peers did, to the strategy before). Only that first message
        # can have crossed our first reveal: a later one claiming the piece revealed to it
        # is news of having got it from us, not proof it had it before.
        self.announced = False
        # Super-seeding: adopted from a strategy that had told it every piece we have; it is
        # served honestly from then on (told every piece we verify, never assigned one).
        self.told_all = False
        # Super-seeding: its copies are counted as a seed's, in one counter for every piece
        # (it sent have all; the pieces it lost since, out of ``pieces``, are taken back one
        # by one), not piece by piece.
        self.whole = False

    def has(self, piece: int) -> bool:
        return self.seed or piece in self.pieces


class RevelationStrategy:
    """The bookkeeping every revelation strategy shares; subclasses decide what to send.

    Args:
        num_pieces: the torrent's piece count.
        have: the pieces we have (verified) at the start.

    Raises:
        LocalProtocolError: ``num_pieces`` is negative or too large, or a piece in ``have`` is
            outside the torrent.
    """

    def __init__(self, num_pieces: int, have: Iterable[int] = ()) -> None:
        if isinstance(num_pieces, bool) or not isinstance(num_pieces, int):
            raise LocalProtocolError(f"num_pieces must be an int, not {num_pieces!r}")
        if not 0 <= num_pieces <= _MAX_PIECES:
            raise LocalProtocolError(f"num_pieces must be in 0..2**32, not {num_pieces}")
        self.num_pieces: Final = num_pieces
        self._have = _PieceBits(num_pieces)  # a bitset as soon as we have a few pieces
        checked = {self._check_piece(piece) for piece in have}
        if len(checked) == num_pieces:
            self._have.fill()  # a seed: no loop over the pieces
        else:
            self._have.update(checked)
        self._peers: dict[PeerKey, _PeerView] = {}  # insertion order is join order
        # Whether the strategy needs to know what each peer has; when it does not, the peer's
        # haves and bitfields are only checked for the peer key (no per-peer piece sets).
        self._tracks_peers = True
        # Adopted peers still owed haves (see adopt), each with a cursor over the pieces:
        # the lowest piece it is owed. The owed pieces are found as the cursor moves on, so a
        # peer costs O(1) whatever the torrent's size (a list of its owed pieces would be up
        # to every piece, per peer). Sent from tick, CATCH_UP_BATCH at a time.
        self._owed: dict[PeerKey, int] = {}
        self._catch_up_at: float | None = None  # when the next batch is due (None: none owed)

    # ---------------------------------------------------------------- queries

    @property
    def have(self) -> frozenset[int]:
        """The pieces we have."""
        return frozenset(self._have)

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    @property
    def peers(self) -> frozenset[PeerKey]:
        """The peers joined or adopted (and not left)."""
        return frozenset(self._peers)

    def revealed(self, peer: PeerKey) -> frozenset[int]:
        """Every piece ``peer`` was told we have (bitfield, have all, haves).

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        return frozenset(self._get(peer).revealed)

    def was_revealed(self, peer: PeerKey, piece: int) -> bool:
        """Whether ``peer`` was told we have ``piece`` (in O(1), unlike :meth:`revealed`).

        A client in super-seeding mode may refuse requests for pieces it never revealed.

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        return piece in self._get(peer).revealed

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to send (``None``: never, as things stand)."""
        return self._catch_up_at

    # ---------------------------------------------------------------- events

    def peer_joined(self, peer: PeerKey, now: float, *, fast: bool = False) -> list[Action]:
        """A connection to ``peer`` is up (``fast``: it speaks BEP 6); what to send it first.

        Raises:
            LocalProtocolError: ``peer`` already joined.
        """
        try:
            known = peer in self._peers
        except TypeError:
            raise LocalProtocolError(f"a peer key is hashable, not {peer!r}") from None
        if known:
            raise LocalProtocolError(f"peer {peer!r} already joined")
        view = _PeerView(peer, fast, self.num_pieces)
        self._peers[peer] = view
        return self._joined(view, now)

    def peer_left(self, peer: PeerKey) -> None:
        """``peer`` is gone; forget it.

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        view = self._get(peer)
        del self._peers[peer]
        self._owed.pop(peer, None)
        self._left(view)

    def adopt(
        self,
        peer: PeerKey,
        now: float,
        *,
        fast: bool = False,
        pieces: Iterable[int] = (),
        seed: bool = False,
        revealed: Iterable[int] = (),
    ) -> list[Action]:
        """Take over ``peer`` from the strategy that served it so far (the strategy is
        switched on a running swarm); returns what to send it now.

        The peer's connection is under way: it was sent its first message (or none) by the
        other strategy, so no bitfield, *have all* or *have none* is ever sent to it, only
        haves. ``fast``: it speaks BEP 6; ``pieces``: what it has (out of range ignored), or
        every piece with ``seed``; ``revealed``: every piece it was told we have (what the
        other strategy's :meth:`revealed` says), which stays told: :meth:`was_revealed` is
        true for each from now on, whatever this strategy would have told it.

        :class:`HonestRevelation` and :class:`LazyBitfield` owe it the pieces we have that it
        was not told: haves, :data:`CATCH_UP_BATCH` now and as many every
        :data:`CATCH_UP_INTERVAL` seconds from :meth:`tick`. :class:`SuperSeeding` serves it
        honestly if it was told every piece we have, else super-seeds it from there.

        Raises:
            LocalProtocolError: ``peer`` already joined, is not hashable, or a piece in
                ``revealed`` is outside the torrent.
        """
        try:
            known = peer in self._peers
        except TypeError:
            raise LocalProtocolError(f"a peer key is hashable, not {peer!r}") from None
        if known:
            raise LocalProtocolError(f"peer {peer!r} already joined")
        view = _PeerView(peer, bool(fast), self.num_pieces)
        for piece in revealed:
            view.revealed.add(self._check_piece(piece))
        if self._tracks_peers:
            if seed:
                view.seed = True
            else:
                view.pieces.update(self._valid(pieces))
        self._peers[peer] = view
        return self._adopted(view, now)

    def peer_bitfield(self, peer: PeerKey, pieces: Collection[int], now: float) -> list[Action]:
        """``peer`` has exactly ``pieces`` (out of range ignored): what it had before is
        replaced, since a bitfield may come late (aria2 sends one instead of many haves).

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        view = self._get(peer)
        if not self._tracks_peers:
            return []
        valid = self._valid(pieces)
        keep = _PieceBits(self.num_pieces)  # (a set of them would be ~4 MB at 100k pieces)
        keep.update(valid)
        actions = self._keep_only(view, keep)
        added = [p for p in valid if not view.has(p)]
        view.pieces.update(added)
        actions.extend(self._peer_gained(view, added, bitfield=True, now=now))
        return actions

    def peer_have(self, peer: PeerKey, piece: int, now: float) -> list[Action]:
        """``peer`` announced ``piece`` (out of range is ignored).

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        # The hot path of a big swarm: every have of every peer comes through here (hence
        # _get written out).
        try:
            view = self._peers[peer]
        except (KeyError, TypeError):
            raise LocalProtocolError(f"peer {peer!r} never joined") from None
        if not self._tracks_peers or not self._in_range(piece) or view.seed or piece in view.pieces:
            return []
        view.pieces.add(piece)
        return self._peer_gained(view, [piece], bitfield=False, now=now)

    def peer_have_all(self, peer: PeerKey, now: float) -> list[Action]:
        """``peer`` has every piece (BEP 6 have all).

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        view = self._get(peer)
        if view.seed or not self._tracks_peers:
            return []
        return self._became_seed(view, now)

    def _became_seed(self, view: _PeerView, now: float) -> list[Action]:
        """``view`` sent have all (it was no seed). Nothing here looks at the pieces it
        gains (the default hooks ignore them): O(1), not a list of every piece it lacked
        for each 5-byte message. A strategy whose hooks count pieces overrides this."""
        view.seed = True
        view.pieces.clear()  # ``seed`` answers for every piece now
        return []

    def peer_have_none(self, peer: PeerKey, now: float) -> list[Action]:
        """``peer`` has nothing (BEP 6 have none): whatever it had before is gone.

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        view = self._get(peer)
        if not self._tracks_peers:
            return []
        return self._lost_all(view, now)

    def _lost_all(self, view: _PeerView, now: float) -> list[Action]:
        """``view`` sent have none. Nothing here looks at the pieces it loses (the default
        hooks ignore them): O(1). A strategy whose hooks count pieces overrides this."""
        view.seed = False
        view.pieces.clear()
        return []

    def _keep_only(self, view: _PeerView, keep: _PieceBits) -> list[Action]:
        """Forget the pieces of ``view`` not in ``keep`` (a late bitfield or have none)."""
        if view.seed:
            if len(keep) == self.num_pieces:
                return []
            view.seed = False
            view.pieces.fill()
        pieces = view.pieces
        lost = [p for p in pieces if p not in keep]  # in piece order: stable actions
        for piece in lost:
            pieces.discard(piece)
        actions: list[Action] = []
        for piece in lost:
            actions.extend(self._peer_lost(view, piece))
        return actions

    def peer_dont_have(self, peer: PeerKey, piece: int, now: float) -> list[Action]:
        """``peer`` no longer has ``piece`` (BEP 54; out of range is ignored).

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        view = self._get(peer)
        if not self._tracks_peers or not self._in_range(piece) or not view.has(piece):
            return []
        if view.seed:
            view.seed = False
            view.pieces.fill()
        view.pieces.discard(piece)
        return self._peer_lost(view, piece)

    def piece_added(self, piece: int, now: float) -> list[Action]:
        """We verified ``piece`` good: what to announce (nothing if we already had it).

        Raises:
            LocalProtocolError: ``piece`` is outside the torrent.
        """
        self._check_piece(piece)
        if piece in self._have:
            return []
        self._have.add(piece)
        return self._added(piece, now)

    def piece_lost(self, piece: int, now: float) -> list[Action]:
        """A piece we had is gone from storage: it is not ours to reveal any more (announced
        again by :meth:`piece_added` once it is back). Nothing if we did not have it.

        Raises:
            LocalProtocolError: ``piece`` is outside the torrent.
        """
        self._check_piece(piece)
        if piece not in self._have:
            return []
        self._have.discard(piece)
        return self._lost(piece, now)

    def tick(self, now: float) -> list[Action]:
        """Whatever was held back and is due at ``now``."""
        due = self._catch_up_at
        if due is None or now < due:
            return []
        return self._catch_up(now)

    # ---------------------------------------------------------------- for subclasses

    def _joined(self, view: _PeerView, now: float) -> list[Action]:
        return self._announce_set(view, self._have)

    def _adopted(self, view: _PeerView, now: float) -> list[Action]:
        """An adopted peer (see :meth:`adopt`): by default it is owed every piece we have
        that it was not told and should be, sent in paced batches, lowest first."""
        actions = self._pay(view, 0)
        if view.key in self._owed and self._catch_up_at is None:
            self._catch_up_at = now + CATCH_UP_INTERVAL
        return actions

    def _worth_telling(self, view: _PeerView, piece: int) -> bool:
        """Whether ``view`` should hear of ``piece`` we have (honest strategies)."""
        return True

    def _pay(self, view: _PeerView, start: int) -> list[Action]:
        """Up to :data:`CATCH_UP_BATCH` haves for ``view``, of the pieces from ``start`` on
        that it is owed: we have them (one lost since is skipped), it was not told (one
        verified again meanwhile was) and should be. Where the next batch starts is kept in
        ``_owed``, the peer taken off it once nothing is left.

        The scan moves past each piece once over the peer's whole catch-up: O(pieces) in
        all, as building the list of its owed pieces would be, without the list."""
        actions: list[Action] = []
        have, told, end = self._have, view.revealed, self.num_pieces
        piece = start
        while True:
            # On to the next piece owed; the cursor rests on it when the batch is full, so
            # that a peer stays in _owed only while something is owed.
            while piece < end and (
                piece not in have or piece in told or not self._worth_telling(view, piece)
            ):
                piece += 1
            if piece >= end or len(actions) >= CATCH_UP_BATCH:
                break
            actions.extend(self._tell(view, piece))
            piece += 1
        if piece < end:
            self._owed[view.key] = piece
        else:
            self._owed.pop(view.key, None)
        return actions

    def _catch_up(self, now: float) -> list[Action]:
        """The next batch of owed haves for every adopted peer still owed some."""
        actions: list[Action] = []
        for key, cursor in list(self._owed.items()):
            actions.extend(self._pay(self._peers[key], cursor))
        self._catch_up_at = now + CATCH_UP_INTERVAL if self._owed else None
        return actions

    def _left(self, view: _PeerView) -> None:
        pass

    def _peer_gained(
        self, view: _PeerView, pieces: list[int], *, bitfield: bool, now: float
    ) -> list[Action]:
        return []

    def _peer_lost(self, view: _PeerView, piece: int) -> list[Action]:
        return []

    def _added(self, piece: int, now: float) -> list[Action]:
        actions: list[Action] = []
        for view in self._peers.values():
            actions.extend(self._tell(view, piece))
        return actions

    def _lost(self, piece: int, now: float) -> list[Action]:
        return []

    def _announce_set(self, view: _PeerView, pieces: Collection[int]) -> list[Action]:
        """The first message telling ``view`` about ``pieces`` (all or part of what we have)."""
        if not pieces:
            # BEP 3 lets a peer with nothing skip the bitfield; BEP 6 wants have none instead.
            return [SendHaveNone(view.key)] if view.fast else []
        if len(pieces) == self.num_pieces:
            view.revealed.fill()  # a seed's every join: no loop over the pieces
        else:
            view.revealed.update(pieces)
        if view.fast and len(pieces) == self.num_pieces:
            return [SendHaveAll(view.key)]
        return [SendBitfield(view.key, frozenset(pieces))]

    def _tell(self, view: _PeerView, piece: int) -> list[Action]:
        """A have for ``piece`` to ``view`` (never told of it: each strategy sees to that)."""
        view.revealed.add(piece)
        return [SendHave(view.key, piece)]

    def _get(self, peer: PeerKey) -> _PeerView:
        try:
            return self._peers[peer]
        except (KeyError, TypeError):  # TypeError: an unhashable key never joined either
            raise LocalProtocolError(f"peer {peer!r} never joined") from None

    def _in_range(self, piece: object) -> bool:
        return (
            isinstance(piece, int) and not isinstance(piece, bool) and 0 <= piece < self.num_pieces
        )

    def _valid(self, pieces: Iterable[object]) -> list[int]:
        return [p for p in pieces if isinstance(p, int) and self._in_range(p)]

    def _check_piece(self, piece: object) -> int:
        if isinstance(piece, int) and self._in_range(piece):
            return piece
        raise LocalProtocolError(
            f"piece {piece!r} is outside the torrent (0..{self.num_pieces - 1})"
        )


class HonestRevelation(RevelationStrategy):
    """Everything we have, at once: a bitfield (or have all / have none), then a have per piece.

    >>> reveal = HonestRevelation(4, have=[0, 2])
    >>> reveal.peer_joined("a", 0.0)
    [SendBitfield(peer='a', pieces=frozenset({0, 2}))]
    >>> reveal.piece_added(3, 1.0)
    [SendHave(peer='a', piece=3)]

    Args:
        num_pieces: the torrent's piece count.
        have: the pieces we have at the start.
        redundant_haves: send a have even to a peer that has the piece already (what libtorrent
            does by default: the peer learns what we can serve to others). With ``False`` such
            peers are skipped, which saves a message per piece and peer in a swarm of seeds.
    """

    def __init__(
        self, num_pieces: int, have: Iterable[int] = (), *, redundant_haves: bool = True
    ) -> None:
        super().__init__(num_pieces, have)
        self._redundant = redundant_haves
        self._tracks_peers = not redundant_haves  # only skipping haves needs their pieces

    def _added(self, piece: int, now: float) -> list[Action]:
        # _tell written out: every piece we verify comes here once per peer.
        actions: list[Action] = []
        redundant = self._redundant
        for view in self._peers.values():
            if redundant or not view.has(piece):
                view.revealed.add(piece)
                actions.append(SendHave(view.key, piece))
        return actions

    def _worth_telling(self, view: _PeerView, piece: int) -> bool:
        return self._redundant or not view.has(piece)


class LazyBitfield(RevelationStrategy):
    """A bitfield with a few pieces left out, and haves for those shortly after.

    Each peer gets its own random choice of ``min(max_withheld, num_pieces // 10)`` pieces (at
    least one; never more than we have) left out of its bitfield, each revealed by a have at a
    random time within ``max_delay`` seconds (send them from :meth:`tick`; ``max_delay=0``
    sends them right after the bitfield). A peer that speaks the fast extension gets that
    bitfield too rather than *have all*, which would give the game away. Pieces verified later
    are announced at once, as :class:`HonestRevelation` does.

    Args:
        num_pieces: the torrent's piece count.
        have: the pieces we have at the start.
        rng: which pieces are left out and when they follow.
        max_withheld: the most pieces left out of one bitfield (libtorrent used 50).
        max_delay: the latest a withheld piece is revealed, in seconds after the join.

    Raises:
        LocalProtocolError: as :class:`RevelationStrategy`, or ``max_withheld`` is below 1, or
            ``max_delay`` is negative.
    """

    def __init__(
        self,
        num_pieces: int,
        have: Iterable[int] = (),
        *,
        rng: random.Random,
        max_withheld: int = 50,
        max_delay: float = 2.0,
    ) -> None:
        super().__init__(num_pieces, have)
        if isinstance(max_withheld, bool) or not isinstance(max_withheld, int) or max_withheld < 1:
            raise LocalProtocolError(f"max_withheld must be an int >= 1, not {max_withheld!r}")
        if not (math.isfinite(max_delay) and max_delay >= 0):
            raise LocalProtocolError(f"max_delay must be >= 0 and finite, not {max_delay!r}")
        self._tracks_peers = False  # every peer gets every have, whatever it has
        self._rng = rng
        self._max_withheld = max_withheld
        self._max_delay = float(max_delay)
        # (due, sequence, view, piece); entries of peers that left are skipped when popped.
        self._pending: list[tuple[float, int, _PeerView, int]] = []
        self._sequence = itertools.count()

    def next_deadline(self) -> float | None:
        """When the next withheld piece (or batch of pieces owed to adopted peers) is due."""
        self._drop_stale()
        return _earliest(super().next_deadline(), self._pending[0][0] if self._pending else None)

    def tick(self, now: float) -> list[Action]:
        """Haves for the withheld pieces due by ``now``, earliest first (after those owed to
        adopted peers)."""
        actions = super().tick(now)
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, view, piece = heapq.heappop(pending)
            # A withheld piece lost meanwhile is not revealed (it is told again when back),
            # nor one told since (lost and verified again: piece_added told every peer).
            if (
                self._peers.get(view.key) is view
                and piece in self._have
                and piece not in view.revealed
            ):
                actions.extend(self._tell(view, piece))
        return actions

    def _joined(self, view: _PeerView, now: float) -> list[Action]:
        have = list(self._have)  # (in piece order)
        count = min(len(have), max(1, min(self._max_withheld, self.num_pieces // 10)))
        withheld = self._rng.sample(have, count) if count else []
        left_out = set(withheld)
        actions = self._announce_set(view, [p for p in have if p not in left_out])
        for piece in sorted(withheld):
            due = now + self._rng.uniform(0.0, self._max_delay) if self._max_delay else now
            heapq.heappush(self._pending, (due, next(self._sequence), view, piece))
        if self._max_delay == 0:
            actions.extend(self.tick(now))
        return actions

    def _drop_stale(self) -> None:
        pending = self._pending
        while pending and self._peers.get(pending[0][2].key) is not pending[0][2]:
            heapq.heappop(pending)


class SuperSeeding(RevelationStrategy):
    """BEP 16 super-seeding: one rare piece at a time per peer, the next once it spread.

    We pose as a peer with nothing (no bitfield, or *have none* to a fast peer) and reveal to
    each joining peer one piece. A peer gets its next piece only when its current one shows up
    at *another* peer (a have or a bitfield from someone else): until then it has nothing more
    from us to ask for. A peer whose first bitfield (or *have all*, crossing our first have)
    shows it already had the piece revealed to it gets another one at once; a later bitfield
    or *have all* claiming the piece counts as a *have* (it got the piece from us: it waits
    for it to show up elsewhere, or a lone peer re-sending its bitfield would be revealed
    every piece). A seed gets nothing (until it lacks a piece again: a *don't have*, *have
    none* or a late bitfield), and a piece is never revealed to a peer that has it.

    Which piece: BEP 16 says "a piece that was never sent, or if all pieces were already sent,
    very rare". Until every piece we have has reached some peer, a peer is only revealed a
    piece that nobody has and nobody is being sent (ties broken with the injected ``rng``); if
    every such piece is already on its way to someone, the peer waits (revealing it would only
    make us upload the same piece twice before the swarm has one copy of each, which is what
    holds the whole swarm back), and is served as soon as a piece is free again or the first
    copy is complete. After that, the piece with the fewest copies, counting the ones on their
    way. A peer leaving frees its piece but returns no actions: the waiting peers are served
    at the next event or :meth:`tick`.

    Only pieces we have are revealed; BEP 16 is meant for the initial seeder, which has them all.

    Switched on while peers are connected (:meth:`~RevelationStrategy.adopt`), it keeps what
    they were told: a peer told every piece we have is served honestly from then on (a have
    for each piece we verify later, no piece assigned); a peer told part of them keeps a
    piece it was told and lacks as its assignment, or is assigned one, and is super-seeded
    from there.

    In a swarm of one leecher nobody else can ever show its piece; ``stall_timeout`` (off by
    default, as in BEP 16) reveals the next piece anyway once the peer has held its current one
    that long without it showing up elsewhere (send from :meth:`tick`).

    Args:
        num_pieces: the torrent's piece count.
        have: the pieces we have (normally all of them).
        rng: breaks ties between equally rare pieces.
        strict: BEP 16's rule (the next piece only once the current one was seen at another
            peer). ``False`` is libtorrent's default, looser mode: the next piece as soon as the
            peer itself announces the current one.
        stall_timeout: seconds after which a peer holding its piece gets the next one even
            though nobody else showed it (``None``: never).

    Raises:
        LocalProtocolError: as :class:`RevelationStrategy`, or ``stall_timeout`` is not
            positive.
    """

    def __init__(
        self,
        num_pieces: int,
        have: Iterable[int] = (),
        *,
        rng: random.Random,
        strict: bool = True,
        stall_timeout: float | None = None,
    ) -> None:
        super().__init__(num_pieces, have)
        if stall_timeout is not None and not (math.isfinite(stall_timeout) and stall_timeout > 0):
            raise LocalProtocolError(f"stall_timeout must be positive, not {stall_timeout!r}")
        self._rng = rng
        self._strict = strict
        self._stall_timeout = stall_timeout
        # Peers known to have each piece: ``_whole`` (the peers that sent have all, see
        # _PeerView.whole: one counter, so that a have all or have none costs O(1), not a
        # count per piece) plus the piece's own ``_copies`` (the other peers that have it,
        # less the whole peers that lost it since; below zero when those are more).
        self._copies = [0] * num_pieces
        self._whole = 0
        self._on_the_way = [0] * num_pieces  # peers it is revealed to, not yet seen elsewhere
        self._assignees: dict[int, set[PeerKey]] = {}
        # Pieces we have bucketed by score (own copies + on the way: the whole peers, the
        # same for every piece, are left out), for a quick rarest pick; level -_whole holds
        # the pieces nobody has and nobody is being sent (see _fresh).
        self._levels: dict[int, list[int]] = {}
        self._position = [-1] * num_pieces  # index in its level's list; -1: we lack it
        # Pieces we have by own copies -> how many: those at -_whole are the pieces no peer
        # has yet (see _undelivered), found in O(1) whatever _whole does.
        self._tally: dict[int, int] = {}
        # Peers with nothing revealed and waiting (not seeds), in the order they started to.
        self._waiting: dict[PeerKey, _PeerView] = {}
        # Peers adopted as told everything (``told_all``), in join order: the only ones told
        # of a piece we verify, so that _added visits them alone and not every peer.
        self._told_all: dict[PeerKey, _PeerView] = {}
        self._feed_due = False  # something changed that may let a waiting peer be served
        for piece in self._have:  # (in piece order)
            self._insert(piece, 0)
        if len(self._have):
            self._tally[0] = len(self._have)

    @property
    def _fresh(self) -> int:
        """The level of a piece nobody has and nobody is being sent."""
        return -self._whole

    @property
    def _undelivered(self) -> int:
        """How many pieces we have that no peer has yet."""
        return self._tally.get(-self._whole, 0)

    def assigned(self, peer: PeerKey) -> int | None:
        """The piece revealed to ``peer`` and waiting to show up elsewhere (``None``: none).

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        return self._get(peer).assigned

    def next_deadline(self) -> float | None:
        """When a peer's stall timeout runs out next (``None``: no timeout, or nobody waits)."""
        timeout = self._stall_timeout
        if timeout is None:
            return None
        waits = [v.holding_since for v in self._peers.values() if v.holding_since is not None]
        return min(waits) + timeout if waits else None

    def tick(self, now: float) -> list[Action]:
        """The next piece for every peer whose stall timeout ran out by ``now``, and for waiting
        peers if a piece was freed since the last event (by a peer leaving)."""
        timeout = self._stall_timeout
        actions: list[Action] = []
        if timeout is not None:
            for view in self._peers.values():
                since = view.holding_since
                if since is not None and now >= since + timeout:
                    self._unassign(view)
                    actions.extend(self._assign(view))
        actions.extend(self._feed())
        return actions

    def peer_have_none(self, peer: PeerKey, now: float) -> list[Action]:
        """``peer`` has nothing (what it had before is gone); waiting peers are served if a
        piece was freed since the last event.

        Raises:
            LocalProtocolError: ``peer`` never joined.
        """
        actions = super().peer_have_none(peer, now)
        actions.extend(self._feed())
        return actions

    # ---------------------------------------------------------------- hooks

    def _joined(self, view: _PeerView, now: float) -> list[Action]:
        actions: list[Action] = [SendHaveNone(view.key)] if view.fast else []
        actions.extend(self._assign(view))
        return actions

    def _adopted(self, view: _PeerView, now: float) -> list[Action]:
        view.announced = True  # (its connection is under way: it told the other strategy)
        # What it has counts as any peer's copies.
        if view.seed:
            self._add_whole(view)
        else:
            for piece in view.pieces:
                self._count(piece, +1)
        revealed, have = view.revealed, self._have
        # (The length test first: a peer told fewer pieces than we have cannot be told all.)
        if revealed and len(revealed) >= len(have) and all(p in revealed for p in have):
            # Told everything already (an honest strategy served it): it stays told, and is
            # served honestly; only the peers that join from now on are super-seeded.
            view.told_all = True
            self._told_all[view.key] = view
            return self._feed()
        # A piece it was told and lacks is the one it is working on (the last strategy's
        # assignment): it stays its assignment, so that it gets no other before that one
        # spread. The lowest, if it was told several (a lazy bitfield's): the first, as the
        # bitset iterates in piece order.
        current = next((p for p in revealed if p in have and not view.has(p)), None)
        if current is not None:
            view.assigned = current
            self._assignees.setdefault(current, set()).add(view.key)
            self._shift(current, on_the_way=+1)
            return self._feed()
        actions = self._assign(view)
        actions.extend(self._feed())
        return actions

    def _left(self, view: _PeerView) -> None:
        self._waiting.pop(view.key, None)
        self._told_all.pop(view.key, None)
        self._unassign(view)
        if view.whole:
            self._drop_whole(view)
        else:
            for piece in view.pieces:
                self._count(piece, -1)

    def _became_seed(self, view: _PeerView, now: float) -> list[Action]:
        # A have all, as the other hooks would see it: every piece the peer lacked gained at
        # once, as from a bitfield. Its copies go to the whole counter: O(what it had, what it
        # lacked of a have all before, the pieces assigned), not O(num_pieces).
        if view.whole:
            # It sent have all before and lost a few pieces since (a bitset of the rest):
            # they come back one by one (a later message: its piece is news, see _had_it).
            lacked = list(view.pieces.complement())
            view.seed = True
            view.pieces.clear()
            return self._peer_gained(view, lacked, bitfield=True, now=now)
        had = view.pieces
        released: dict[PeerKey, _PeerView] = {}
        for piece in sorted(self._assignees):  # in piece order, as a list of them would be
            if piece not in had:  # it gained it: seen elsewhere, BEP 16's signal
                for key in self._assignees[piece]:
                    if key != view.key:
                        released[key] = self._peers[key]
        own = view.assigned
        if own is not None and own not in had:
            if self._had_it(view) or not self._strict:
                released[view.key] = view  # (a have all is a bitfield: it had it before)
            else:
                view.holding_since = now  # it got it from us: BEP 16 waits, as for a have
        view.announced = True
        self._add_whole(view)
        view.seed = True
        view.pieces.clear()  # ``seed`` answers for every piece now
        return self._release(view, released)

    def _lost_all(self, view: _PeerView, now: float) -> list[Action]:
        view.announced = True  # (a bitfield after a have none is a late one)
        if not view.whole:
            return self._keep_only(view, _PieceBits(self.num_pieces))
        lacks_more = view.seed or len(view.pieces)
        self._drop_whole(view)
        view.seed = False
        view.pieces.clear()
        if lacks_more:
            self._lacks_again(view)
        return self._feed()

    def _add_whole(self, view: _PeerView) -> None:
        """Count ``view`` (about to be a seed) in the whole counter: each piece it has
        already moves from its own copies there, and every other piece gains a copy."""
        first_copies = bool(self._undelivered)
        due = self._feed_due
        for piece in view.pieces:
            self._count(piece, -1)  # (its copy stays: in the counter now)
        self._whole += 1
        view.whole = True
        # As when each piece it lacked gained a copy: the first copy of every piece is out
        # if it was not (nothing else: no piece became fresh).
        self._feed_due = due or (first_copies and not self._undelivered)

    def _drop_whole(self, view: _PeerView) -> None:
        """Take ``view`` out of the whole counter: every piece it has loses a copy."""
        lacked = [] if view.seed else list(view.pieces.complement())
        old = self._whole
        # The pieces it has with one copy and none on the way become fresh, which may serve
        # a waiting peer (what _insert flags when each is moved): those at that level but
        # the ones it lacked.
        position, copies, on_the_way = self._position, self._copies, self._on_the_way
        freed = len(self._levels.get(1 - old, ())) - sum(
            1 for p in lacked if position[p] >= 0 and copies[p] + on_the_way[p] == 1 - old
        )
        due = self._feed_due
        self._whole -= 1
        view.whole = False
        for piece in lacked:
            self._count(piece, +1)  # it never counted for these: the whole counter did
        self._feed_due = due or freed > 0

    def _peer_lost(self, view: _PeerView, piece: int) -> list[Action]:
        self._count(piece, -1)
        self._lacks_again(view)
        return self._feed()

    def _lacks_again(self, view: _PeerView) -> None:
        """``view`` (no seed now) lacks a piece it had: maybe one to reveal. With no piece
        assigned it waits for one, if it did not already: a seed is kept out of
        ``_waiting`` (by ``_assign`` and ``_release``), and a peer that sent have all and
        lost pieces since (have none, a *don't have*, a late bitfield) would otherwise
        never be revealed anything again."""
        if view.assigned is None and not view.told_all:
            self._waiting.setdefault(view.key, view)
            self._feed_due = True

    def _peer_gained(
        self, view: _PeerView, pieces: list[int], *, bitfield: bool, now: float
    ) -> list[Action]:
        released: dict[PeerKey, _PeerView] = {}
        own = view.assigned
        for piece in pieces:
            self._count(piece, +1)
            for key in self._assignees.get(piece, ()):
                if key != view.key:
                    released[key] = self._peers[key]  # seen elsewhere: BEP 16's signal
        if own is not None and own in pieces:
            if (bitfield and self._had_it(view)) or not self._strict:
                # It had the piece before we revealed it (its first bitfield), or loose mode:
                # move on.
                released[view.key] = view
            else:
                view.holding_since = now  # BEP 16: now wait for it to show up elsewhere
        view.announced = True
        return self._release(view, released)

    def _had_it(self, view: _PeerView) -> bool:
        """Whether the bitfield or have all now claiming ``view``'s piece shows it had the
        piece before we revealed it (so it gets another at once) rather than got it from us.

        Only the peer's first message (a bitfield or have all, which may cross our haves on
        the wire, the first or a later one another peer's pieces earned it): in strict mode a
        later one counts as a have (BEP 16: wait for the piece to show up at another peer),
        or a lone peer re-sending its bitfield with each piece we reveal would be revealed
        them all. Loose mode moves on at either anyway."""
        return not view.announced

    def _release(self, view: _PeerView, released: dict[PeerKey, _PeerView]) -> list[Action]:
        """``view`` gained pieces, which let the ``released`` peers (their piece showed up
        elsewhere, or ``view``'s own piece it had) have their next piece."""
        if view.seed:
            self._waiting.pop(view.key, None)
        # Unassign every released peer first, so their pieces count as free for each other.
        for other in released.values():
            self._unassign(other)
        actions: list[Action] = []
        for other in self._peers.values():  # join order, for determinism
            if other.key in released:
                actions.extend(self._assign(other))
        actions.extend(self._feed())
        return actions

    def _added(self, piece: int, now: float) -> list[Action]:
        copies = self._copies[piece]
        self._tally[copies] = self._tally.get(copies, 0) + 1
        self._insert(piece, copies + self._on_the_way[piece])
        self._feed_due = True
        # Peers adopted as told everything hear of it as an honest strategy tells them.
        actions: list[Action] = []
        for view in self._told_all.values():
            actions.extend(self._tell(view, piece))
        actions.extend(self._feed())
        return actions

    def _lost(self, piece: int, now: float) -> list[Action]:
        # Out of the buckets, so never revealed again until _added puts it back; peers it is
        # on its way to keep it assigned (they may still get it from others).
        if self._position[piece] < 0:
            return []
        copies = self._copies[piece]
        self._remove(piece, copies + self._on_the_way[piece])
        self._untally(copies)
        if copies == self._fresh and not self._undelivered:
            self._feed_due = True  # the first copy of every piece we have is out
        return self._feed()

    # ---------------------------------------------------------------- assignment

    def _assign(self, view: _PeerView) -> list[Action]:
        """Reveal ``view`` its next piece, if there is one it lacks and was not told of."""
        if view.assigned is not None or view.seed or view.told_all:
            return []
        piece = self._rarest_for(view)
        if piece is None:
            self._waiting.setdefault(view.key, view)
            return []
        self._waiting.pop(view.key, None)
        view.assigned = piece
        self._assignees.setdefault(piece, set()).add(view.key)
        self._shift(piece, on_the_way=+1)
        return self._tell(view, piece)

    def _unassign(self, view: _PeerView) -> None:
        piece = view.assigned
        if piece is None:
            return
        view.assigned = None
        view.holding_since = None
        assignees = self._assignees[piece]
        assignees.discard(view.key)
        if not assignees:
            del self._assignees[piece]
        self._shift(piece, on_the_way=-1)

    def _feed(self) -> list[Action]:
        """Serve the waiting peers if something changed that may give them a piece."""
        if not self._feed_due:
            return []
        self._feed_due = False
        actions: list[Action] = []
        for view in list(self._waiting.values()):
            if self._undelivered and self._fresh not in self._levels:
                break  # first-copy phase with every fresh piece on its way: keep waiting
            actions.extend(self._assign(view))
        return actions

    def _rarest_for(self, view: _PeerView) -> int | None:
        """The piece ``view`` should be revealed (see the class docstring), or ``None``.

        Scanning a level from a random start and wrapping keeps the pick O(1) when the peer
        lacks most pieces (the usual case) instead of filtering the whole level.
        """
        levels = [self._fresh] if self._undelivered else sorted(self._levels)
        for level in levels:
            if level not in self._levels:
                continue
            bucket = self._levels[level]
            size = len(bucket)
            start = self._rng.randrange(size)
            for offset in range(size):
                piece = bucket[(start + offset) % size]
                if not view.has(piece) and piece not in view.revealed:
                    return piece
        return None

    def _count(self, piece: int, delta: int) -> None:
        before = self._copies[piece]
        self._copies[piece] = after = before + delta
        if self._position[piece] >= 0:
            tally = self._tally
            self._untally(before)
            tally[after] = tally.get(after, 0) + 1
            if before == self._fresh and not self._undelivered:
                self._feed_due = True  # the first copy is complete: rarest-first from now on
        self._move(piece, delta)

    def _untally(self, copies: int) -> None:
        left = self._tally[copies] - 1
        if left:
            self._tally[copies] = left
        else:
            del self._tally[copies]

    def _shift(self, piece: int, *, on_the_way: int) -> None:
        self._on_the_way[piece] += on_the_way
        self._move(piece, on_the_way)

    def _move(self, piece: int, delta: int) -> None:
        if self._position[piece] < 0:
            return  # we lack it: never revealed, not bucketed
        old = self._copies[piece] + self._on_the_way[piece] - delta
        self._remove(piece, old)
        self._insert(piece, old + delta)

    def _insert(self, piece: int, level: int) -> None:
        if level == -self._whole:  # (_fresh, inline: this runs for every move)
            self._feed_due = True  # a fresh piece: a waiting peer may take it
        bucket = self._levels.setdefault(level, [])
        self._position[piece] = len(bucket)
        bucket.append(piece)

    def _remove(self, piece: int, level: int) -> None:
        bucket = self._levels[level]
        index = self._position[piece]
        last = bucket.pop()
        if last != piece:
            bucket[index] = last
            self._position[last] = index
        if not bucket:
            del self._levels[level]
        self._position[piece] = -1


def _earliest(a: float | None, b: float | None) -> float | None:
    """The earlier of two deadlines, either of which may be ``None`` (none)."""
    if a is None:
        return b
    return a if b is None else min(a, b)
