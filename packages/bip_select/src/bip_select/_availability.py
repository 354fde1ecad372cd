"""Piece availability: how many peers have each piece, and the pieces we want, rarest first.

API:

- ``Availability(num_pieces, rng)``: fed what peers say they have --
  ``add_peer(peer)``, ``bitfield(peer, pieces)``, ``have(peer, piece)``,
  ``have_all(peer)``, ``have_none(peer)``, ``dont_have(peer, piece)``,
  ``remove_peer(peer)`` -- and asked ``count(piece)``, ``peer_has(peer, piece)``,
  ``holders(piece)``, ``count_among(piece, peers)``, ``peer_pieces(peer)``,
  ``is_seed(peer)``, ``num_seeds``, ``num_peers``.
- The *wanted index*: the selection layer marks the pieces it still wants with their
  priority (``set_priority(piece, 1..7)``; 0 takes a piece out, as does having it);
  ``iter_wanted(peer)`` then yields the wanted pieces ``peer`` has, highest priority
  first, rarest first within a priority, in random order among equals.
  ``iter_wanted(None)`` yields every wanted piece in that order, and
  ``wanted_key(piece)`` sorts a few wanted pieces into it without a walk.

How it stays cheap (libtorrent's piece_picker keeps pieces sorted by priority and
availability the same way): a peer that has everything (a have-all, or a bitfield
that is full) is a *seed* and is only counted in ``num_seeds``, which shifts every
piece's count equally and so never reorders anything. A seed that then says it lost
a piece (BEP 54 lt_donthave) stays counted in that shift, as a *near-seed*: it keeps
a bitmap of the pieces it lacks, and each of those takes one from its piece's own
count. So a peer flipping a piece (have all, don't have, have) costs O(1) per
message, as it would for a peer that never had everything, and not a recount of every
piece each time it stops or starts being a seed. Every other have moves one piece
from one bucket to the next: O(1). Wanted pieces live in buckets keyed by
``(-priority, count)`` (so that plain sorting puts them in the walk's order); each
bucket is a list kept in random order (a new piece swaps with a random member), so
walking the buckets in order gives rarest first with random tie-breaking at no extra
cost, and stops as soon as the caller has enough.
A change of many pieces at once (a bitfield, a departure, a have none, a peer completing)
only bumps their counts, at C speed, and marks the buckets stale; changes while stale
touch counts only, and the next read of the order (``iter_wanted``, ``wanted_key``,
``priority_levels``) rebuilds the buckets once, each in random order again (see
``_tidy``). Moving each piece between buckets cost microseconds in Python: a second for
a bitfield of a million pieces, paid again by every peer that connected or left.
libtorrent's piece_picker does the same (a bitfield of fewer than min(50, half the
pieces) updates piece by piece, a bigger one bumps the counters and sets ``m_dirty``).
For a peer with few pieces, its own pieces are sorted instead of walking the buckets.

Counts never go below zero: a peer's pieces are remembered (a packed bitmap, one bit
per piece, nothing for a seed, the pieces it lacks for a near-seed: at most
``num_pieces / 8`` bytes a peer either way), so a donthave or a departure only takes
back what was given. (A piece's own count, before the shift is added, is below zero
when more near-seeds lack it than other peers have it.)
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Collection, Hashable, Iterable, Iterator
from itertools import compress, islice, repeat
from operator import add, setitem
from typing import TypeAlias

from bip_metainfo import PieceSet

from ._errors import LocalProtocolError

__all__ = ["Availability"]

PeerKey: TypeAlias = Hashable

_SEED = None  # a peer's bitmap when it counts in the shift: nothing to remember per piece

# A change of at least this many pieces (or half the torrent's, if fewer) leaves the wanted
# index stale instead of moving each piece: libtorrent's threshold for its bitfields.
_FEW = 50


class Availability:
    """Per-piece availability counts and the wanted pieces ordered by priority and rarity.

    >>> a = Availability(4, random.Random(1))
    >>> a.add_peer("x"); a.bitfield("x", {0, 1})
    >>> a.add_peer("y"); a.have("y", 1)
    True
    >>> a.add_peer("s"); a.have_all("s")
    >>> [a.count(p) for p in range(4)]
    [2, 3, 1, 1]
    >>> for piece in range(4):
    ...     a.set_priority(piece, 4)
    >>> list(a.iter_wanted("x"))
    [0, 1]
    """

    __slots__ = (
        "_buckets",
        "_count",
        "_few",
        "_lacks",
        "_num_pieces",
        "_num_wanted",
        "_peers",
        "_perm",
        "_pos",
        "_priority",
        "_rng",
        "_stale",
        "_whole",
    )

    def __init__(self, num_pieces: int, rng: random.Random) -> None:
        """Track ``num_pieces`` pieces; ``rng`` breaks ties between equally rare pieces."""
        if type(num_pieces) is not int or num_pieces <= 0:
            raise LocalProtocolError(f"a torrent has at least one piece, not {num_pieces!r}")
        self._num_pieces = num_pieces
        self._rng = rng
        # Own counts: the peers that have the piece without being (near-)seeds, less the
        # near-seeds that lack it. A piece's availability adds ``_whole``.
        self._count = [0] * num_pieces
        # Seeds and near-seeds: counted in every piece at once.
        self._whole = 0
        # peer -> packed bitmap of its pieces and how many it has; None bitmap = a seed,
        # or a near-seed when the peer is in ``_lacks`` too.
        self._peers: dict[PeerKey, tuple[bytearray | None, list[int]]] = {}
        # Near-seeds: peer -> packed bitmap of the pieces it lacks (never empty of bits).
        self._lacks: dict[PeerKey, bytearray] = {}
        # The wanted index: priority per piece (0 = not wanted), position in its bucket.
        self._priority = bytearray(num_pieces)
        # (An array, not a list: a rebuild rewrites every position, and a list would
        # allocate an int object for each and free the one it held.)
        self._pos = array("q", [-1]) * num_pieces
        # Keyed by (-priority, count), so that the keys' natural order is the walk's.
        self._buckets: dict[tuple[int, int], list[int]] = {}
        self._num_wanted = 0
        # The buckets (and positions) no longer match the counts and priorities: rebuilt
        # at the next read of the order (see _shift and _tidy).
        self._stale = False
        self._few = min(_FEW, num_pieces // 2)
        self._perm: array[int] | None = None  # the rebuild's random order (see _tidy)

    # -- peers ------------------------------------------------------------------------

    @property
    def num_pieces(self) -> int:
        """How many pieces the torrent has."""
        return self._num_pieces

    @property
    def num_peers(self) -> int:
        """How many peers are known (seeds included)."""
        return len(self._peers)

    @property
    def num_seeds(self) -> int:
        """How many known peers have every piece."""
        return self._whole - len(self._lacks)

    def add_peer(self, peer: PeerKey) -> None:
        """Start tracking ``peer`` (it has nothing yet).

        Raises:
            LocalProtocolError: the peer is already known.
        """
        if peer in self._peers:
            raise LocalProtocolError(f"peer {peer!r} joined twice")
        self._peers[peer] = (_empty(self._num_pieces), [0])

    def remove_peer(self, peer: PeerKey) -> None:
        """Forget ``peer`` and take back every piece it had."""
        self.have_none(peer)
        del self._peers[peer]

    def has_peer(self, peer: PeerKey) -> bool:
        """Whether ``peer`` is known."""
        return peer in self._peers

    def _entry(self, peer: PeerKey) -> tuple[bytearray | None, list[int]]:
        try:
            return self._peers[peer]
        except KeyError:
            raise LocalProtocolError(f"peer {peer!r} never joined") from None

    def _valid(self, piece: object) -> bool:
        return type(piece) is int and 0 <= piece < self._num_pieces

    def bitfield(self, peer: PeerKey, pieces: Iterable[int]) -> None:
        """``peer`` has exactly ``pieces`` (what it had before is replaced).

        Indices outside the torrent are ignored (the client's codec should have
        refused them already). A full bitfield makes the peer a seed. A bip_peer
        ``PieceSet`` of this torrent's size is copied bitmap to bitmap, without
        visiting its pieces one by one.
        """
        self.have_none(peer)
        bits, size = self._entry(peer)
        assert bits is not None  # have_none made it an explicit peer
        if isinstance(pieces, PieceSet) and pieces.num_pieces == self._num_pieces:
            # Same wire order (the high bit of byte 0 is piece 0), and PieceSet keeps
            # no bits past the end: a plain copy.
            bits[:] = pieces.to_bitfield()
            size[0] = len(pieces)
        else:
            for piece in pieces:
                if self._valid(piece) and not bits[piece >> 3] & (0x80 >> (piece & 7)):
                    bits[piece >> 3] |= 0x80 >> (piece & 7)
                    size[0] += 1
        if size[0] == self._num_pieces:
            self._peers[peer] = (_SEED, size)
            self._whole += 1
            return
        self._shift(self._listed(bits, size[0]), 1)

    def have(self, peer: PeerKey, piece: int) -> bool:
        """``peer`` announced ``piece``; returns whether that is news.

        Becoming complete turns the peer into a seed (O(num_pieces) once per peer,
        after which its pieces cost nothing).
        """
        # The hot path of a big swarm (every have of every peer): _entry, _valid and _bump
        # (with its _unlink and _link) written out.
        try:
            bits, size = self._peers[peer]
        except KeyError:
            raise LocalProtocolError(f"peer {peer!r} never joined") from None
        if type(piece) is not int or not 0 <= piece < self._num_pieces:
            return False
        if bits is None:
            return self._regain(peer, piece, size)
        index, mask = piece >> 3, 0x80 >> (piece & 7)
        if bits[index] & mask:
            return False
        bits[index] |= mask
        size[0] += 1
        count = self._count
        old = count[piece]
        count[piece] = old + 1
        level = self._priority[piece]
        if level and not self._stale:
            pos = self._pos
            buckets = self._buckets
            key = (-level, old)
            bucket = buckets[key]
            last = bucket.pop()
            if last != piece:
                i = pos[piece]
                bucket[i] = last
                pos[last] = i
            if not bucket:
                del buckets[key]
            key = (-level, old + 1)
            found = buckets.get(key)
            if found is None:
                found = buckets[key] = []
            bucket = found
            n = len(bucket)
            j = int(self._rng.random() * (n + 1))
            if j == n:
                bucket.append(piece)
                pos[piece] = n
            else:
                other = bucket[j]
                bucket[j] = piece
                pos[piece] = j
                bucket.append(other)
                pos[other] = n
        if size[0] == self._num_pieces:
            self._make_seed(peer, bits, size)
        return True

    def _regain(self, peer: PeerKey, piece: int, size: list[int]) -> bool:
        """A have from a (near-)seed: news only for a piece a near-seed lacks. O(1)."""
        lacks = self._lacks.get(peer)
        if lacks is None:
            return False  # a seed has it already
        index, mask = piece >> 3, 0x80 >> (piece & 7)
        if not lacks[index] & mask:
            return False
        lacks[index] &= ~mask & 0xFF
        size[0] += 1
        self._count[piece] += 1
        self._bump(piece, self._count[piece] - 1)
        if size[0] == self._num_pieces:
            del self._lacks[peer]  # whole again: a seed
        return True

    def have_all(self, peer: PeerKey) -> None:
        """``peer`` has every piece (BEP 6 have all, or a full bitfield).

        O(1) for a peer that had nothing (or everything); a near-seed gives back what it
        lacked, an explicit peer what it had (both paid for by the messages that made them).
        """
        bits, size = self._entry(peer)
        if bits is None:
            lacks = self._lacks.pop(peer, None)
            if lacks is not None:
                self._shift(self._listed(lacks, self._num_pieces - size[0]), 1)
                size[0] = self._num_pieces
            return
        if size[0]:
            self.have_none(peer)
            bits, size = self._entry(peer)
        self._peers[peer] = (_SEED, size)
        size[0] = self._num_pieces
        self._whole += 1

    def _make_seed(self, peer: PeerKey, bits: bytearray, size: list[int]) -> None:
        # Once per peer that completes one have at a time (N haves paid for it); it then
        # stays a seed or near-seed whatever it flips, until a have none or a bitfield.
        self._shift(range(self._num_pieces), -1)
        self._peers[peer] = (_SEED, size)
        self._whole += 1

    def have_none(self, peer: PeerKey) -> None:
        """``peer`` has nothing (BEP 6 have none; also how a departure starts)."""
        bits, size = self._entry(peer)
        if bits is None:
            self._whole -= 1
            lacks = self._lacks.pop(peer, None)
            if lacks is None:
                bits = _empty(self._num_pieces)
            else:
                # Its lacked pieces took one each from their own counts: give it back.
                self._shift(self._listed(lacks, self._num_pieces - size[0]), 1)
                lacks[:] = bytes(len(lacks))
                bits = lacks  # reused as the (empty) bitmap of its pieces
            self._peers[peer] = (bits, size)
        elif size[0]:
            self._shift(self._listed(bits, size[0]), -1)
            bits[:] = bytes(len(bits))
        size[0] = 0

    def dont_have(self, peer: PeerKey, piece: int) -> bool:
        """``peer`` no longer has ``piece`` (BEP 54 lt_donthave); returns whether it had it.

        O(1): a seed becomes a near-seed (see the module docstring), not a peer whose every
        piece is counted one by one.
        """
        bits, size = self._entry(peer)
        if not self._valid(piece):
            return False
        index, mask = piece >> 3, 0x80 >> (piece & 7)
        if bits is None:
            lacks = self._lacks.get(peer)
            if lacks is None:
                lacks = self._lacks[peer] = _empty(self._num_pieces)  # C speed, once
            elif lacks[index] & mask:
                return False
            lacks[index] |= mask
            size[0] -= 1
            self._count[piece] -= 1
            self._bump(piece, self._count[piece] + 1)
            return True
        if not bits[index] & mask:
            return False
        bits[index] &= ~mask & 0xFF
        size[0] -= 1
        self._count[piece] -= 1
        self._bump(piece, self._count[piece] + 1)
        return True

    # -- queries ----------------------------------------------------------------------

    def count(self, piece: int) -> int:
        """How many known peers have ``piece`` (seeds included)."""
        if type(piece) is not int or not 0 <= piece < self._num_pieces:  # _valid, inline
            raise LocalProtocolError(f"piece {piece!r} is not in 0..{self._num_pieces - 1}")
        return self._count[piece] + self._whole

    def peer_has(self, peer: PeerKey, piece: int) -> bool:
        """Whether ``peer`` has ``piece`` (False for an index outside the torrent)."""
        try:
            bits, _ = self._peers[peer]
        except KeyError:
            raise LocalProtocolError(f"peer {peer!r} never joined") from None
        if type(piece) is not int or not 0 <= piece < self._num_pieces:
            return False
        if bits is None:
            lacks = self._lacks.get(peer)
            return lacks is None or not lacks[piece >> 3] & (0x80 >> (piece & 7))
        return bool(bits[piece >> 3] & (0x80 >> (piece & 7)))

    def holders(self, piece: int) -> set[PeerKey]:
        """The known peers that have ``piece`` (seeds included): one pass over the peers,
        cheaper than :meth:`peer_has` for each.

        Raises:
            LocalProtocolError: ``piece`` is outside the torrent.
        """
        if not self._valid(piece):
            raise LocalProtocolError(f"piece {piece!r} is not in 0..{self._num_pieces - 1}")
        index, mask = piece >> 3, 0x80 >> (piece & 7)
        lacking = {peer for peer, lacks in self._lacks.items() if lacks[index] & mask}
        return {
            peer
            for peer, (bits, _) in self._peers.items()
            if (bits is None and peer not in lacking) or (bits is not None and bits[index] & mask)
        }

    def count_among(self, piece: int, peers: Iterable[PeerKey]) -> int:
        """How many of ``peers`` have ``piece`` (a peer not known counts for nothing): one
        pass over ``peers`` only, cheaper than :meth:`peer_has` for each.

        Raises:
            LocalProtocolError: ``piece`` is outside the torrent.
        """
        if not self._valid(piece):
            raise LocalProtocolError(f"piece {piece!r} is not in 0..{self._num_pieces - 1}")
        index, mask = piece >> 3, 0x80 >> (piece & 7)
        entries, lacking = self._peers, self._lacks
        count = 0
        for peer in peers:
            entry = entries.get(peer)
            if entry is None:
                continue
            bits = entry[0]
            if bits is None:
                lacks = lacking.get(peer)
                count += lacks is None or not lacks[index] & mask
            else:
                count += bool(bits[index] & mask)
        return count

    def is_seed(self, peer: PeerKey) -> bool:
        """Whether ``peer`` has every piece."""
        return self._entry(peer)[0] is None and peer not in self._lacks

    def peer_piece_count(self, peer: PeerKey) -> int:
        """How many pieces ``peer`` has."""
        return self._entry(peer)[1][0]

    def peer_pieces(self, peer: PeerKey, start: int = 0) -> Iterator[int]:
        """The pieces ``peer`` has from index ``start`` on, in index order."""
        bits, _ = self._entry(peer)
        start = max(start, 0)
        if bits is None:
            lacks = self._lacks.get(peer)
            if lacks is None:
                return iter(range(start, self._num_pieces))
            return _ones(self._invert(lacks), start)
        return _ones(bits, start)

    def _invert(self, bits: bytearray) -> bytearray:
        """The complement of a packed bitmap (no bits past the end), at C speed."""
        inverted = bits.translate(_INVERT)
        if self._num_pieces & 7:
            inverted[-1] &= (0xFF << (8 - (self._num_pieces & 7))) & 0xFF
        return inverted

    def min_count(self, pieces: Collection[int] | None = None) -> int:
        """The lowest availability among ``pieces`` (default: every piece); 0 if none."""
        if pieces is None:
            return min(self._count) + self._whole
        return min((self._count[p] for p in pieces if self._valid(p)), default=0) + self._whole

    # -- the wanted index -------------------------------------------------------------

    @property
    def num_wanted(self) -> int:
        """How many pieces are in the wanted index."""
        return self._num_wanted

    def priority_levels(self) -> list[int]:
        """The priorities wanted pieces have, highest first (O(buckets) once the index is
        built)."""
        self._tidy()
        return sorted({-negated for negated, _ in self._buckets}, reverse=True)

    def priority(self, piece: int) -> int:
        """The priority ``piece`` has in the wanted index (0: not wanted)."""
        if type(piece) is not int or not 0 <= piece < self._num_pieces:  # _valid, inline
            raise LocalProtocolError(f"piece {piece!r} is not in 0..{self._num_pieces - 1}")
        return self._priority[piece]

    def set_priority(self, piece: int, priority: int) -> None:
        """Put ``piece`` in the wanted index with ``priority`` (1..7), or take it out (0).

        Raises:
            LocalProtocolError: a bad piece or priority.
        """
        if not self._valid(piece):
            raise LocalProtocolError(f"piece {piece!r} is not in 0..{self._num_pieces - 1}")
        if type(priority) is not int or not 0 <= priority <= 7:
            raise LocalProtocolError(f"priority {priority!r} is not in 0..7")
        old = self._priority[piece]
        if old == priority:
            return
        stale = self._stale  # the rebuild will place it: nothing to move now
        if old:
            if not stale:
                self._unlink(piece, (-old, self._count[piece]))
            self._num_wanted -= 1
        self._priority[piece] = priority
        if priority:
            if not stale:
                self._link(piece, (-priority, self._count[piece]))
            self._num_wanted += 1

    def _link(self, piece: int, key: tuple[int, int]) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
        # Insert at a random position (the displaced member moves to the end): the
        # bucket stays a uniformly shuffled list, which is the random tie-breaking.
        n = len(bucket)
        j = int(self._rng.random() * (n + 1))  # uniform in 0..n, cheaper than randint
        if j == n:
            bucket.append(piece)
            self._pos[piece] = n
        else:
            other = bucket[j]
            bucket[j] = piece
            self._pos[piece] = j
            bucket.append(other)
            self._pos[other] = n

    def _unlink(self, piece: int, key: tuple[int, int]) -> None:
        bucket = self._buckets[key]
        i = self._pos[piece]
        last = bucket.pop()
        if last != piece:
            bucket[i] = last
            self._pos[last] = i
        self._pos[piece] = -1
        if not bucket:
            del self._buckets[key]

    def _bump(self, piece: int, old_count: int) -> None:
        """Move a wanted piece from its ``old_count`` bucket to its current one."""
        priority = self._priority[piece]
        if priority and not self._stale:
            self._unlink(piece, (-priority, old_count))
            self._link(piece, (-priority, self._count[piece]))

    def _shift(self, pieces: Iterable[int], delta: int) -> None:
        """Add ``delta`` to the count of every piece in ``pieces``.

        A few pieces move between buckets one by one (:meth:`_move`). More only have their
        counts bumped and leave the buckets stale, rebuilt once by the next read of the
        order (:meth:`_tidy`): a bitfield or a departure touches up to every piece, and
        one rebuild costs less than moving half of them, let alone once per peer.
        """
        if self._num_wanted and not self._stale:
            pieces = iter(pieces)
            first = list(islice(pieces, self._few))
            if len(first) < self._few:
                self._move(first, delta)
                return
            self._stale = True
            pieces = first + list(pieces)
        elif not isinstance(pieces, (list, range)):
            pieces = list(pieces)
        # (With nothing wanted the buckets are empty: the counts are all there is.)
        # count[piece] += delta for each piece, at C speed (the pieces are distinct).
        count = self._count
        deque(
            map(
                setitem,
                repeat(count),
                pieces,
                map(add, map(count.__getitem__, pieces), repeat(delta)),
            ),
            maxlen=0,
        )

    def _listed(self, bits: bytearray, set_bits: int) -> list[int]:
        """The pieces set in ``bits``, which has ``set_bits`` of them: skipping empty bytes
        for a few (:func:`_ones`), unpacking every bit at C speed for more."""
        if set_bits * 16 < self._num_pieces:
            return list(_ones(bits))
        return _unpacked(bits, self._num_pieces)

    def _move(self, pieces: Iterable[int], delta: int) -> None:
        """Add ``delta`` to the count of every piece in ``pieces``, moving wanted ones.

        :meth:`_unlink` and :meth:`_link` written out in one loop.
        """
        count = self._count
        priority = self._priority
        pos = self._pos
        buckets = self._buckets
        random_ = self._rng.random
        for piece in pieces:
            old = count[piece]
            new = count[piece] = old + delta
            level = priority[piece]
            if not level:
                continue
            key = (-level, old)
            bucket = buckets[key]
            last = bucket.pop()
            if last != piece:
                i = pos[piece]
                bucket[i] = last
                pos[last] = i
            if not bucket:
                del buckets[key]
            key = (-level, new)
            found = buckets.get(key)
            if found is None:
                found = buckets[key] = []
            bucket = found
            n = len(bucket)
            j = int(random_() * (n + 1))
            if j == n:
                bucket.append(piece)
                pos[piece] = n
            else:
                other = bucket[j]
                bucket[j] = piece
                pos[piece] = j
                bucket.append(other)
                pos[other] = n

    def _tidy(self) -> None:
        """Rebuild stale buckets: each wanted piece into its ``(-priority, count)`` bucket,
        in random order. O(num_pieces) at C speed, once after any number of bulk changes.

        The random order is that of a permutation of all the pieces drawn once (the first
        rebuild pays for its shuffle): the wanted pieces in that order, stably sorted by
        key, fill each bucket in a uniformly random order, as the one-by-one random
        insertions do, without a shuffle per rebuild (a Python loop, more than the rest
        of the rebuild together). Each bucket's order is as random as before; only two
        pieces still tied at a later rebuild come in the same order again.
        """
        if not self._stale:
            return
        count, priority, pos = self._count, self._priority, self._pos
        if self._perm is None:
            drawn = list(range(self._num_pieces))
            self._rng.shuffle(drawn)
            self._perm = array("I" if self._num_pieces <= 1 << 32 else "Q", drawn)
        perm = self._perm
        if 0 in priority:
            wanted = list(compress(perm, map(priority.__getitem__, perm)))
        else:  # every piece wanted (a download's start): no filter
            wanted = list(perm)
        if sum(level in priority for level in range(1, 8)) == 1:
            key = count.__getitem__
        else:
            # (7 - priority, count) as one int: counts are within +-num_peers.
            span = 2 * len(self._peers) + 1
            keys = list(map(add, map(span.__mul__, priority.translate(_DESCENDING)), count))
            key = keys.__getitem__
        wanted.sort(key=key)  # stable: the random order stays within each bucket
        buckets: dict[tuple[int, int], list[int]] = {}
        start, end = 0, len(wanted)
        while start < end:
            first = wanted[start]
            stop = bisect_right(wanted, key(first), start, key=key)
            bucket = wanted[start:stop]
            deque(map(setitem, repeat(pos), bucket, range(stop - start)), maxlen=0)
            buckets[(-priority[first], count[first])] = bucket
            start = stop
        self._buckets = buckets
        self._stale = False

    def _order(self, piece: int) -> tuple[int, int, int]:
        return (-self._priority[piece], self._count[piece], self._pos[piece])

    def wanted_key(self, piece: int) -> tuple[int, int, int]:
        """Where a wanted ``piece`` comes in :meth:`iter_wanted`'s order: sorting a few
        wanted pieces by this key puts them in that order, without walking the index.

        Raises:
            LocalProtocolError: ``piece`` is outside the torrent or not wanted.
        """
        if not self._valid(piece) or not self._priority[piece]:
            raise LocalProtocolError(f"piece {piece!r} is not a wanted piece")
        self._tidy()
        return self._order(piece)

    def iter_wanted(self, peer: PeerKey | None = None) -> Iterator[int]:
        """Wanted pieces (those ``peer`` has, if given): priority, then rarest, then random.

        Lazy: stop iterating as soon as you have enough. The index must not change
        while iterating (collect what you need first). After a bulk change (a bitfield,
        a departure) the first call rebuilds the index: O(num_pieces), once.
        """
        self._tidy()
        if peer is None:
            return self._walk(None)
        bits, size = self._entry(peer)
        lacks = None
        if bits is None:
            lacks = self._lacks.get(peer)
            if lacks is None:
                return self._walk(None)
        # Walking the buckets costs about (wanted / peer's share) steps per piece found;
        # sorting the peer's own pieces costs k log k. Take the cheaper one.
        k = size[0]
        if k * k < 16 * self._num_wanted:
            own = self._invert(lacks) if lacks is not None else bits
            assert own is not None  # (an explicit peer's bitmap when it lacks nothing)
            mine = [p for p in _ones(own) if self._priority[p]]
            mine.sort(key=self._order)
            return iter(mine)
        if lacks is not None:
            return self._walk(lacks, skip=True)
        return self._walk(bits)

    def _walk(self, bits: bytearray | None, *, skip: bool = False) -> Iterator[int]:
        """The wanted pieces in order: all of them (``bits`` None), those set in ``bits``,
        or with ``skip`` those not set in it (a near-seed's lacked pieces)."""
        self._tidy()
        for key in sorted(self._buckets):  # keys are (-priority, count): the walk's order
            bucket = self._buckets.get(key)
            if bucket is None:
                continue
            if bits is None:
                yield from bucket
            elif skip:
                for piece in bucket:
                    if not bits[piece >> 3] & (0x80 >> (piece & 7)):
                        yield piece
            else:
                for piece in bucket:
                    if bits[piece >> 3] & (0x80 >> (piece & 7)):
                        yield piece

    def check(self) -> None:
        """Verify the internal invariants (for tests): counts match the peers' pieces."""
        expected = [0] * self._num_pieces
        whole = 0
        for peer, (bits, size) in self._peers.items():
            if bits is None:
                whole += 1
                lacks = self._lacks.get(peer)
                if lacks is None:
                    assert size[0] == self._num_pieces
                    continue
                missing = int.from_bytes(lacks, "big").bit_count()
                assert missing, "a near-seed lacks something"
                assert missing == self._num_pieces - size[0]
                assert max(_ones(lacks), default=-1) < self._num_pieces
                for piece in _ones(lacks):
                    expected[piece] -= 1
                continue
            assert peer not in self._lacks
            assert int.from_bytes(bits, "big").bit_count() == size[0]
            assert max(_ones(bits), default=-1) < self._num_pieces
            for piece in _ones(bits):
                expected[piece] += 1
        assert expected == self._count, "availability counts drifted"
        assert whole == self._whole
        assert all(peer in self._peers for peer in self._lacks)
        assert all(self._count[p] + whole >= 0 for p in range(self._num_pieces))
        if self._stale:  # the buckets wait for a rebuild: only the counts are kept up
            assert self._num_wanted == sum(1 for p in self._priority if p)
            return
        wanted = 0
        for (negated, count), bucket in self._buckets.items():
            assert bucket
            for i, piece in enumerate(bucket):
                assert self._pos[piece] == i
                assert self._priority[piece] == -negated
                assert self._count[piece] == count
                wanted += 1
        assert wanted == self._num_wanted == sum(1 for p in self._priority if p)


_NONZERO = bytes([0] + [1] * 255)  # translate table: which bytes hold any piece
_INVERT = bytes(255 - byte for byte in range(256))  # translate table: every bit flipped
_DESCENDING = bytes(7 - byte & 0xFF for byte in range(256))  # translate table: 7 - priority
# translate tables: bit i of each byte (BitTorrent order: i = 0 is the high bit)
_BIT = tuple(bytes((byte >> (7 - i)) & 1 for byte in range(256)) for i in range(8))
_OFFSETS = tuple(tuple(i for i in range(8) if byte & (0x80 >> i)) for byte in range(256))


def _ones(bits: bytearray, start: int = 0) -> Iterator[int]:
    """The pieces set in a packed bitmap (BitTorrent order), from ``start`` on.

    Empty stretches are skipped at C speed: ``translate`` marks the non-zero bytes and
    ``find`` jumps between them.
    """
    flags = bits.translate(_NONZERO)
    i = flags.find(1, start >> 3)
    while i >= 0:
        base = i << 3
        for offset in _OFFSETS[bits[i]]:
            if base + offset >= start:
                yield base + offset
        i = flags.find(1, i + 1)


def _unpacked(bits: bytearray, num_pieces: int) -> list[int]:
    """The pieces set in a packed bitmap, in order, at C speed: one byte per bit (eight
    translates), then the indices of the ones."""
    flags = bytearray(len(bits) << 3)
    for i, table in enumerate(_BIT):
        flags[i::8] = bits.translate(table)
    return list(compress(range(num_pieces), flags))


def _empty(num_pieces: int) -> bytearray:
    return bytearray((num_pieces + 7) >> 3)
