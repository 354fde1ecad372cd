"""Block-level request bookkeeping: which blocks are asked of whom, and what came back.

API:

- ``RequestBook(geometry)``: the state of every piece being downloaded.

  - ``request(peer, block, now, duplicate=False)``: we sent a request. Refused
    (``LocalProtocolError``) for a block already received, already asked of that
    peer, or -- unless ``duplicate`` (end-game, late deadline pieces) -- already
    asked of another peer: outside end-game no block is requested twice.
  - ``receive(peer, block) -> Received | None``: a block arrived; says which other
    peers to cancel (the end-game losers) and whether the piece is now complete
    (every block in: hash it). ``None``: nothing we need (a duplicate, a piece we
    have, not a block of this torrent).
  - ``reject(peer, block)``, ``time_out(peer, block)``, ``cancel(peer, block)``:
    the request is gone; the block is free to request again once nobody else has it.
  - ``drop_peer(peer, keep=None) -> list[Block]``: every request of a departed (or,
    without the fast extension, choking) peer is gone, but those ``keep(block)`` spares;
    returns them.
  - ``piece_passed(piece)`` / ``piece_failed(piece)``: the hash verdict; both return
    the peers that sent blocks of the piece (for trust and bans). A failed piece
    starts over with every block free.
  - ``set_wanted(piece, wanted)``: whether the piece counts in ``num_full`` (the
    picker's priority 0 takes it out); every piece counts until told otherwise.
  - Queries: ``outstanding(peer)`` (oldest first, with the time each was sent),
    ``num_outstanding(peer)``, ``requesters(block)``, ``is_received(block)``,
    ``sources(piece)``, ``is_asked_of(piece, peer)``, ``askers(piece)``,
    ``worked_on_by_others(piece, peer)``, ``started_pieces()``, ``free_blocks(piece)``,
    ``num_free(piece)``, ``have(piece)``, ``num_full`` (wanted started pieces with no
    free block: every block received or asked; O(1), kept as blocks change hands),
    ``duplicate_candidates(peer, peer_has, limit, arrived=None)`` (from an index of the
    blocks by requester count: it looks at the few pieces it returns blocks of, plus
    the ones ``peer_has`` refuses, not at every outstanding block).

Every requested block ends up in exactly one of: received (from this or another peer),
rejected, timed out, cancelled or dropped; the property tests check it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from ._errors import LocalProtocolError
from ._geometry import BLOCK_SIZE, Block, TorrentGeometry

__all__ = ["Received", "RequestBook"]

PeerKey: TypeAlias = Hashable


@dataclass(frozen=True, slots=True)
class Received:
    """What a received block settles.

    Attributes:
        cancel: other peers the same block was asked of (end-game or a late
            deadline piece): send them a cancel.
        piece_complete: every block of the piece is in; hash it and report the verdict
            with :meth:`RequestBook.piece_passed` or :meth:`RequestBook.piece_failed`.
        requested: whether this peer had been asked for the block (False: it came
            after we cancelled or timed out the request, and is still useful).
    """

    cancel: tuple[PeerKey, ...]
    piece_complete: bool
    requested: bool = True


class _Piece:
    """A piece being downloaded: per block, who was asked for it and whether it came."""

    __slots__ = (
        "asked",
        "askers",
        "copies",
        "first_free",
        "num_free",
        "num_received",
        "received",
        "seq",
        "sources",
    )

    def __init__(self, blocks: int, seq: int) -> None:
        self.seq = seq  # when the piece was started: older pieces sort first
        self.received = bytearray(blocks)
        self.asked: list[list[PeerKey]] = [[] for _ in range(blocks)]
        self.num_received = 0
        self.num_free = blocks  # neither received nor asked of anyone
        self.first_free = 0  # no free block below this index (big pieces: no rescans)
        self.sources: dict[PeerKey, int] = {}  # peer -> blocks it delivered
        # peer -> blocks of the piece asked of it and not settled: kept where ``asked``
        # changes, so "who works on this piece" costs O(peers), not O(blocks).
        self.askers: dict[PeerKey, int] = {}
        # requester count -> blocks not received asked of exactly that many peers (the
        # book's duplicate index files the piece under each count present here).
        self.copies: dict[int, int] = {}

    @property
    def missing(self) -> int:
        """Blocks not received yet."""
        return len(self.received) - self.num_received

    def ask(self, peer: PeerKey) -> None:
        """One more block of the piece is asked of ``peer``."""
        self.askers[peer] = self.askers.get(peer, 0) + 1

    def unask(self, peer: PeerKey) -> None:
        """A block of the piece asked of ``peer`` is settled (received, released)."""
        left = self.askers[peer] - 1
        if left:
            self.askers[peer] = left
        else:
            del self.askers[peer]


class RequestBook:
    """Which blocks are asked of which peers, and which have arrived.

    >>> from bip_select._geometry import TorrentGeometry
    >>> book = RequestBook(TorrentGeometry(2, 32768))
    >>> a, b = book.free_blocks(0)
    >>> book.request("x", a, now=0.0)
    >>> book.num_free(0), book.requesters(a)
    (1, ('x',))
    >>> book.receive("x", a)
    Received(cancel=(), piece_complete=False, requested=True)
    """

    __slots__ = (
        "_by_copies",
        "_geometry",
        "_have",
        "_num_full",
        "_num_have",
        "_peers",
        "_pieces",
        "_seq",
        "_unwanted",
    )

    def __init__(self, geometry: TorrentGeometry, have: Iterable[int] = ()) -> None:
        """Start with nothing requested; ``have`` lists pieces already verified."""
        self._geometry = geometry
        self._pieces: dict[int, _Piece] = {}
        # peer -> {block: time sent}, insertion-ordered: the oldest request first.
        self._peers: dict[PeerKey, dict[Block, float]] = {}
        self._have = bytearray(geometry.num_pieces)
        self._num_have = 0
        self._seq = 0  # the next started piece's start order
        # The end-game index: requester count -> blocks missing -> the pieces with a block
        # not received asked of exactly that many peers, as (start order, piece), sorted:
        # walked in that order it is duplicate_candidates' order, with no pass over every
        # outstanding block (every received block asks for a duplicate in end-game). Built
        # at the first such call (None until then): the blocks before end-game, most of a
        # download, pay nothing for it.
        self._by_copies: dict[int, dict[int, list[tuple[int, int]]]] | None = None
        # Pieces set_wanted took out of num_full (1), and the running count itself: wanted
        # started pieces with no free block, so that "end-game?" costs O(1), not a walk.
        self._unwanted = bytearray(geometry.num_pieces)
        self._num_full = 0
        for piece in have:
            geometry.check_piece(piece)
            if not self._have[piece]:
                self._have[piece] = 1
                self._num_have += 1

    # -- queries ----------------------------------------------------------------------

    @property
    def geometry(self) -> TorrentGeometry:
        """The torrent's geometry."""
        return self._geometry

    @property
    def num_have(self) -> int:
        """How many pieces have passed their hash check."""
        return self._num_have

    def have(self, piece: int) -> bool:
        """Whether ``piece`` has passed its hash check."""
        self._geometry.check_piece(piece)
        return bool(self._have[piece])

    def is_started(self, piece: int) -> bool:
        """Whether ``piece`` has blocks asked for or received (and is not had yet)."""
        return piece in self._pieces

    def started_pieces(self) -> Iterator[int]:
        """The pieces being downloaded, oldest first."""
        return iter(self._pieces)

    @property
    def num_started(self) -> int:
        """How many pieces are being downloaded."""
        return len(self._pieces)

    @property
    def num_full(self) -> int:
        """Wanted (:meth:`set_wanted`) started pieces with no free block: each block is
        received or asked of someone. O(1)."""
        return self._num_full

    def set_wanted(self, piece: int, wanted: bool) -> None:
        """Whether ``piece`` counts in :attr:`num_full` (the picker takes pieces of priority
        0 out). Every piece counts until told otherwise."""
        self._geometry.check_piece(piece)
        unwanted = 0 if wanted else 1
        if self._unwanted[piece] == unwanted:
            return
        state = self._pieces.get(piece)
        if state is not None and not state.num_free:
            self._num_full += -1 if unwanted else 1
        self._unwanted[piece] = unwanted

    def num_free(self, piece: int) -> int:
        """Blocks of ``piece`` neither received nor asked of anyone."""
        state = self._pieces.get(piece)
        if state is not None:
            return state.num_free
        if self.have(piece):
            return 0
        return self._geometry.blocks_in_piece(piece)

    def free_blocks(self, piece: int, limit: int | None = None) -> list[Block]:
        """Up to ``limit`` blocks of ``piece`` neither received nor asked of anyone, in order."""
        if limit is None:
            limit = self._geometry.blocks_in_piece(piece)
        state = self._pieces.get(piece)
        if state is None:
            if self.have(piece):
                return []
            return list(self._geometry.blocks(piece)[:limit])
        result: list[Block] = []
        if limit <= 0 or not state.num_free:
            return result
        geometry = self._geometry
        asked = state.asked
        received = state.received
        start = state.first_free
        while asked[start] or received[start]:
            start += 1  # num_free > 0: a free block lies ahead
        state.first_free = start
        for index in range(start, len(asked)):
            if not asked[index] and not received[index]:
                result.append(geometry.block(piece, index))
                if len(result) >= limit:
                    break
        return result

    def outstanding(self, peer: PeerKey) -> Mapping[Block, float]:
        """The blocks asked of ``peer`` and not settled, oldest first, with their send time."""
        return self._peers.get(peer, {})

    def num_outstanding(self, peer: PeerKey) -> int:
        """How many requests to ``peer`` are not settled."""
        requests = self._peers.get(peer)
        return len(requests) if requests else 0

    def peers(self) -> Iterator[PeerKey]:
        """The peers with unsettled requests."""
        return (peer for peer, requests in self._peers.items() if requests)

    @property
    def num_peers(self) -> int:
        """How many peers have unsettled requests."""
        return len(self._peers)

    def requesters(self, block: Block) -> tuple[PeerKey, ...]:
        """The peers ``block`` is asked of, first asked first."""
        state = self._pieces.get(block.piece)
        if state is None or not self._geometry.is_block(block):
            return ()
        return tuple(state.asked[block.begin // BLOCK_SIZE])

    def is_received(self, block: Block) -> bool:
        """Whether ``block`` has arrived (True for every block of a piece we have)."""
        if not self._geometry.is_block(block):
            return False
        if self._have[block.piece]:
            return True
        state = self._pieces.get(block.piece)
        return state is not None and bool(state.received[block.begin // BLOCK_SIZE])

    def sources(self, piece: int) -> Mapping[PeerKey, int]:
        """The peers that delivered blocks of a started piece, with how many each."""
        state = self._pieces.get(piece)
        return dict(state.sources) if state is not None else {}

    def is_asked_of(self, piece: int, peer: PeerKey) -> bool:
        """Whether a block of ``piece`` is asked of ``peer`` and not settled. O(1)."""
        state = self._pieces.get(piece)
        return state is not None and peer in state.askers

    def askers(self, piece: int) -> Collection[PeerKey]:
        """The peers asked for a block of ``piece`` and not settled: a live view, O(1) (do
        not change the book while walking it)."""
        state = self._pieces.get(piece)
        return state.askers.keys() if state is not None else ()

    def worked_on_by_others(self, piece: int, peer: PeerKey) -> bool:
        """Whether a peer other than ``peer`` delivered a block of ``piece`` or is asked
        for one (departed peers count: their data is in it). O(peers on the piece)."""
        state = self._pieces.get(piece)
        if state is None:
            return False
        if any(source != peer for source in state.sources):
            return True
        return any(other != peer for other in state.askers)

    def duplicate_candidates(
        self,
        peer: PeerKey,
        peer_has: Callable[[int], bool],
        limit: int,
        arrived: Callable[[PeerKey, Block], bool] | None = None,
    ) -> list[Block]:
        """Blocks asked of others, not of ``peer``, not received, that ``peer`` could send.

        The end-game choice: fewest requesters first (spread the duplicates), then
        the pieces closest to completion, then the oldest requests. A block that
        ``arrived(other, block)`` says came from one of its requesters (it waits for our
        disk) is no candidate: it is here, and asking for it again wastes a peer's upload
        (libtorrent never re-requests a block in its "writing" state).
        """
        if limit <= 0:
            return []
        mine = self._peers.get(peer, {})
        found: list[Block] = []
        geometry = self._geometry
        pieces = self._pieces
        by_copies = self._by_copies
        if by_copies is None:
            by_copies = self._build_index()
        # The index's order is the promised one: requester count, blocks missing, start
        # order, then block order within the piece.
        for copies in sorted(by_copies):
            by_missing = by_copies[copies]
            for missing in sorted(by_missing):
                for _, piece in by_missing[missing]:
                    if not peer_has(piece):
                        continue
                    for index, asked in enumerate(pieces[piece].asked):
                        if len(asked) != copies:  # received blocks have no askers
                            continue
                        block = geometry.block(piece, index)
                        if block in mine:
                            continue
                        if arrived is not None and any(arrived(other, block) for other in asked):
                            continue
                        found.append(block)
                        if len(found) >= limit:
                            return found
        return found

    # -- the end-game index and the full count ------------------------------------------

    def _build_index(self) -> dict[int, dict[int, list[tuple[int, int]]]]:
        """Index every block asked and not received (the first end-game query); from now on
        every change keeps it."""
        by_copies: dict[int, dict[int, list[tuple[int, int]]]] = {}
        self._by_copies = by_copies
        for piece, state in self._pieces.items():
            state.copies = {}
            for asked in state.asked:
                if asked:
                    self._file(by_copies, piece, state, len(asked))
        return by_copies

    @staticmethod
    def _file(
        by_copies: dict[int, dict[int, list[tuple[int, int]]]],
        piece: int,
        state: _Piece,
        copies: int,
    ) -> None:
        """A block of ``piece`` not received is now asked of ``copies`` peers (1 or more)."""
        count = state.copies.get(copies, 0)
        state.copies[copies] = count + 1
        if not count:
            by_missing = by_copies.setdefault(copies, {})
            insort(by_missing.setdefault(state.missing, []), (state.seq, piece))

    @staticmethod
    def _unfile(
        by_copies: dict[int, dict[int, list[tuple[int, int]]]],
        piece: int,
        state: _Piece,
        copies: int,
    ) -> None:
        """A block of ``piece`` asked of ``copies`` peers (1 or more) is no longer."""
        count = state.copies[copies] - 1
        if count:
            state.copies[copies] = count
        else:
            del state.copies[copies]
            _drop_entry(by_copies, piece, state, copies, state.missing)

    def _recopy(self, piece: int, state: _Piece, before: int, after: int) -> None:
        """A block of ``piece`` not received went from ``before`` requesters to ``after``."""
        by_copies = self._by_copies
        if by_copies is None:
            return  # no end-game query yet: nothing to keep
        if before:
            self._unfile(by_copies, piece, state, before)
        if after:
            self._file(by_copies, piece, state, after)

    def _filled(self, piece: int) -> None:
        """``piece``'s last free block is asked or received."""
        if not self._unwanted[piece]:
            self._num_full += 1

    def _unfilled(self, piece: int) -> None:
        """A block of ``piece``, which had none free, is free again (or the piece is gone)."""
        if not self._unwanted[piece]:
            self._num_full -= 1

    def _pop(self, piece: int) -> _Piece | None:
        """Stop tracking ``piece`` (verified, or failed): out of the index and the count."""
        state = self._pieces.pop(piece, None)
        if state is not None:
            if self._by_copies is not None:
                for copies in state.copies:
                    _drop_entry(self._by_copies, piece, state, copies, state.missing)
            if not state.num_free:
                self._unfilled(piece)
        return state

    # -- requests ---------------------------------------------------------------------

    def _state(self, block: Block) -> tuple[_Piece, int]:
        if not self._geometry.is_block(block):
            raise LocalProtocolError(f"{block!r} is not a block of this torrent")
        if self._have[block.piece]:
            raise LocalProtocolError(f"piece {block.piece} is already verified")
        state = self._pieces.get(block.piece)
        if state is None:
            blocks = self._geometry.blocks_in_piece(block.piece)
            state = self._pieces[block.piece] = _Piece(blocks, self._seq)
            self._seq += 1
        return state, block.begin // BLOCK_SIZE

    def request(self, peer: PeerKey, block: Block, now: float, *, duplicate: bool = False) -> None:
        """Record that ``block`` was asked of ``peer`` at ``now``.

        Raises:
            LocalProtocolError: the block is not one of ours, is received, is already
                asked of ``peer``, or is asked of another peer and ``duplicate`` is
                False. Nothing is recorded then.
        """
        state, index = self._state(block)
        if state.received[index]:
            raise LocalProtocolError(f"{block!r} is already received")
        asked = state.asked[index]
        if peer in asked:
            raise LocalProtocolError(f"{block!r} is already asked of {peer!r}")
        if asked and not duplicate:
            raise LocalProtocolError(f"{block!r} is already asked of {asked[0]!r}")
        if not asked:
            state.num_free -= 1
            if not state.num_free:
                self._filled(block.piece)
        self._recopy(block.piece, state, len(asked), len(asked) + 1)
        asked.append(peer)
        state.ask(peer)
        self._peers.setdefault(peer, {})[block] = now

    def _release(self, peer: PeerKey, block: Block) -> bool:
        requests = self._peers.get(peer)
        if not requests or requests.pop(block, None) is None:
            return False
        state = self._pieces[block.piece]
        index = block.begin // BLOCK_SIZE
        asked = state.asked[index]
        self._recopy(block.piece, state, len(asked), len(asked) - 1)
        asked.remove(peer)
        state.unask(peer)
        if not asked and not state.received[index]:
            if not state.num_free:
                self._unfilled(block.piece)
            state.num_free += 1
            state.first_free = min(state.first_free, index)
        if not requests:
            del self._peers[peer]
        self._forget_if_idle(block.piece, state)
        return True

    def _forget_if_idle(self, piece: int, state: _Piece) -> None:
        # A piece with nothing received and nothing asked is not "started": dropping it
        # keeps started_pieces() to the pieces that really are in progress.
        if not state.num_received and state.num_free == len(state.received):
            del self._pieces[piece]

    def reject(self, peer: PeerKey, block: Block) -> bool:
        """``peer`` rejected ``block`` (BEP 6); returns whether it was asked of it."""
        return self._release(peer, block)

    def time_out(self, peer: PeerKey, block: Block) -> bool:
        """The request of ``block`` to ``peer`` timed out; returns whether it was pending.

        The block may still arrive later (:meth:`receive` accepts it while needed).
        """
        return self._release(peer, block)

    def cancel(self, peer: PeerKey, block: Block) -> bool:
        """We cancelled ``block`` at ``peer``; returns whether it was pending."""
        return self._release(peer, block)

    def drop_peer(self, peer: PeerKey, keep: Callable[[Block], bool] | None = None) -> list[Block]:
        """Forget every pending request to ``peer``; returns them, oldest first.

        ``keep`` spares the blocks it says True of: they stay asked of ``peer`` (a choke
        without the fast extension keeps the blocks that arrived and wait for our disk:
        they are served, and freeing them would have them asked of others again).
        """
        blocks = list(self._peers.get(peer, ()))
        if keep is not None:
            blocks = [block for block in blocks if not keep(block)]
        for block in blocks:
            self._release(peer, block)
        return blocks

    def receive(self, peer: PeerKey, block: Block) -> Received | None:
        """``block`` arrived from ``peer``.

        Returns None when we do not need it (already received, a piece we have, not a
        block of this torrent); otherwise which other peers to cancel and whether the
        piece is complete. A block that arrives after its request to ``peer`` was
        timed out or cancelled is still taken while no one else delivered it.
        """
        if not self._geometry.is_block(block) or self._have[block.piece]:
            return None
        state = self._pieces.get(block.piece)
        index = block.begin // BLOCK_SIZE
        if state is None:
            state, index = self._state(block)
        if state.received[index]:
            self._release(peer, block)  # a duplicate that lost the race: settled
            return None
        asked = state.asked[index]
        requested = peer in asked
        others = tuple(p for p in asked if p != peer)
        for other in asked:
            requests = self._peers[other]
            del requests[block]
            if not requests:
                del self._peers[other]
            state.unask(other)
        by_copies = self._by_copies
        if not asked:
            state.num_free -= 1
            if not state.num_free:
                self._filled(block.piece)
        elif by_copies is not None:
            self._unfile(by_copies, block.piece, state, len(asked))
        asked.clear()
        missing = state.missing
        state.received[index] = 1
        state.num_received += 1
        if by_copies is not None:
            # One block fewer missing: the piece moves up in every index bucket it is in.
            for copies in state.copies:
                _drop_entry(by_copies, block.piece, state, copies, missing)
                by_missing = by_copies.setdefault(copies, {})
                insort(by_missing.setdefault(missing - 1, []), (state.seq, block.piece))
        state.sources[peer] = state.sources.get(peer, 0) + 1
        return Received(others, state.num_received == len(state.received), requested)

    def piece_passed(self, piece: int) -> tuple[PeerKey, ...]:
        """``piece`` hashed good: it is ours. Returns the peers that sent its blocks.

        Pending duplicate requests for it are forgotten (the caller cancels them with
        what :meth:`outstanding` listed, or simply lets them arrive and be ignored).
        """
        self._geometry.check_piece(piece)
        state = self._pop(piece)
        if not self._have[piece]:
            self._have[piece] = 1
            self._num_have += 1
        if state is None:
            return ()
        self._drop_asked(piece, state)
        return tuple(state.sources)

    def piece_failed(self, piece: int) -> tuple[PeerKey, ...]:
        """``piece`` hashed bad: every block is free again. Returns the peers that sent it."""
        self._geometry.check_piece(piece)
        state = self._pop(piece)
        if state is None:
            return ()
        self._drop_asked(piece, state)
        return tuple(state.sources)

    def _drop_asked(self, piece: int, state: _Piece) -> None:
        geometry = self._geometry
        for index, asked in enumerate(state.asked):
            for peer in asked:
                requests = self._peers[peer]
                del requests[geometry.block(piece, index)]
                if not requests:
                    del self._peers[peer]

    def lose_piece(self, piece: int) -> None:
        """A piece we had is gone (storage error): it is wanted again."""
        self._geometry.check_piece(piece)
        if self._have[piece]:
            self._have[piece] = 0
            self._num_have -= 1

    def check(self) -> None:
        """Verify the internal invariants (for tests)."""
        seen: dict[PeerKey, set[Block]] = {}
        filed: defaultdict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        full = 0
        for piece, state in self._pieces.items():
            assert not self._have[piece]
            free = 0
            for index, asked in enumerate(state.asked):
                if not asked and not state.received[index]:
                    assert index >= state.first_free
                assert len(set(asked)) == len(asked)
                if state.received[index]:
                    assert not asked
                elif not asked:
                    free += 1
                for peer in asked:
                    seen.setdefault(peer, set()).add(self._geometry.block(piece, index))
            assert free == state.num_free
            counted: dict[PeerKey, int] = {}
            for asked in state.asked:
                for peer in asked:
                    counted[peer] = counted.get(peer, 0) + 1
            assert counted == state.askers
            assert sum(state.received) == state.num_received
            copies: dict[int, int] = {}
            for asked in state.asked:
                if asked:
                    copies[len(asked)] = copies.get(len(asked), 0) + 1
            assert copies == state.copies or self._by_copies is None
            for count in copies:
                filed[count, state.missing].append((state.seq, piece))
            full += not state.num_free and not self._unwanted[piece]
        assert {p: set(r) for p, r in self._peers.items()} == seen
        assert all(self._peers.values())
        assert full == self._num_full
        if self._by_copies is not None:
            indexed = {
                (count, missing): entries
                for count, by_missing in self._by_copies.items()
                for missing, entries in by_missing.items()
            }
            assert indexed == {key: sorted(entries) for key, entries in filed.items()}


def _drop_entry(
    by_copies: dict[int, dict[int, list[tuple[int, int]]]],
    piece: int,
    state: _Piece,
    copies: int,
    missing: int,
) -> None:
    """Take ``piece`` out of the end-game index bucket (``copies``, ``missing``)."""
    by_missing = by_copies[copies]
    entries = by_missing[missing]
    del entries[bisect_left(entries, (state.seq, piece))]
    if not entries:
        del by_missing[missing]
        if not by_missing:
            del by_copies[copies]
