"""What a client tells the swarm brain: one frozen dataclass per thing that happened.

A client turns what its peer connections report (bip_peer's events), what its disk reports (a
piece hashed good or bad, or not stored) and what its user asks (priorities) into these inputs and
feeds them to :meth:`bip_select.SwarmBrain.handle` together with the current time. Every input
about a peer carries the client's own handle for that peer (:data:`PeerKey`: any hashable, a
connection id or an address; the simulator uses ints).

Inputs only describe; they do not check that the peer is known or the piece in range, because
that depends on the brain's state. The brain ignores a peer's nonsense (a have past the end, a
block nobody asked for) and raises :class:`~bip_select.LocalProtocolError` only for the client's
own mistakes (an input about a peer that never joined).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

from ._geometry import Block

if TYPE_CHECKING:  # a type only: the selection module needs nothing from here
    from ._selection import Strategy

__all__ = [
    "AllowedFast",
    "BlockArrived",
    "BlockDropped",
    "BlockReceived",
    "BlockRejected",
    "BlockSent",
    "Input",
    "PeerBitfield",
    "PeerChokedUs",
    "PeerDontHave",
    "PeerHave",
    "PeerHaveAll",
    "PeerHaveNone",
    "PeerInterested",
    "PeerJoined",
    "PeerKey",
    "PeerLeft",
    "PeerNotInterested",
    "PeerUnchokedUs",
    "PeerUploadOnly",
    "PieceDeadlineCleared",
    "PieceDeadlineSet",
    "PieceDeadlinesCleared",
    "PieceDiscarded",
    "PieceLost",
    "PieceVerified",
    "PrioritiesChanged",
    "RequestTimedOut",
    "StrategyChanged",
    "Tick",
]

PeerKey: TypeAlias = Hashable
"""The client's handle for a peer: anything hashable (a connection id, an address, an int)."""


class Input:
    """Base class of everything :meth:`SwarmBrain.handle` accepts."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PeerJoined(Input):
    """A connection to ``peer`` is established (handshake done, before any bitfield).

    ``reqq`` is the number of outstanding requests the peer says it accepts (the BEP 10
    handshake's ``reqq``; ``None`` if it did not say, and a conservative default applies).
    ``fast`` says whether the peer speaks the fast extension (BEP 6: have all / have none,
    reject, allowed fast). ``upload_only`` is BEP 21: the peer will not download from us.

    ``allowed_fast`` is the BEP 6 allowed-fast set we offer a fast peer, in the order BEP 6
    generates it: the client computes it from the peer's address (bip_peer's
    :meth:`~bip_peer.PeerConnection.allowed_fast_set`), the brain decides when to send it (as
    libtorrent: once, at the peer's first interest, without the pieces it has then; never to a
    peer that only uploads, nor while super-seeding). At most
    :data:`~bip_select.MAX_ALLOWED_FAST` pieces, each of the torrent; empty: nothing is granted.

    >>> PeerJoined(7, reqq=250, fast=True)
    PeerJoined(peer=7, reqq=250, fast=True, upload_only=False, allowed_fast=())
    """

    peer: PeerKey
    reqq: int | None = None
    fast: bool = False
    upload_only: bool = False
    allowed_fast: Sequence[int] = ()


@dataclass(frozen=True, slots=True)
class PeerLeft(Input):
    """The connection to ``peer`` is gone; its requests are returned to the pool."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class PeerBitfield(Input):
    """``peer`` sent its bitfield: exactly the pieces it has, replacing what it said before.

    A bitfield may come late, after haves or another bitfield (aria2 sends one instead of many
    haves; libtorrent accepts it so): pieces the peer had and this set lacks are taken back.
    ``pieces`` is any collection of piece indices supporting ``in``, ``len`` and iteration: a
    ``frozenset[int]`` or a :class:`bip_peer.PieceSet`. The brain copies what it needs, so a
    mutable set may change afterwards.
    """

    peer: PeerKey
    pieces: Collection[int]


@dataclass(frozen=True, slots=True)
class PeerHave(Input):
    """``peer`` announced that it now has ``piece``."""

    peer: PeerKey
    piece: int


@dataclass(frozen=True, slots=True)
class PeerHaveAll(Input):
    """``peer`` sent have all (BEP 6): it is a seed (whenever it comes)."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class PeerHaveNone(Input):
    """``peer`` sent have none (BEP 6): it has nothing, whatever it announced before."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class PeerDontHave(Input):
    """``peer`` no longer has ``piece`` (BEP 54 ``lt_donthave``)."""

    peer: PeerKey
    piece: int


@dataclass(frozen=True, slots=True)
class PeerUploadOnly(Input):
    """``peer`` said it only uploads now (BEP 21 ``upload_only``), or no longer does.

    It comes after :class:`PeerJoined`, from the peer's extended handshake or an ``upload_only``
    message (a peer that completes its download mid-connection, as libtorrent announces it).

    >>> PeerUploadOnly(7, True)
    PeerUploadOnly(peer=7, upload_only=True)
    """

    peer: PeerKey
    upload_only: bool


@dataclass(frozen=True, slots=True)
class PeerChokedUs(Input):
    """``peer`` choked us: our outstanding requests to it will not be served.

    With the fast extension the peer rejects each dropped request explicitly (and may keep
    serving allowed-fast pieces), so the brain waits for the rejects; without it every request
    to that peer is considered lost at once, as BEP 3 says, but for the blocks that arrived
    and wait for our disk (:class:`BlockArrived`): those were served, and stay the peer's
    until :class:`BlockReceived` or :class:`BlockDropped`.
    """

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class PeerUnchokedUs(Input):
    """``peer`` unchoked us: we may request from it."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class PeerInterested(Input):
    """``peer`` is interested in what we have (it becomes a candidate for an unchoke slot)."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class PeerNotInterested(Input):
    """``peer`` is no longer interested in what we have."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class AllowedFast(Input):
    """``peer`` lets us request ``piece`` even while it chokes us (BEP 6 allowed fast)."""

    peer: PeerKey
    piece: int


@dataclass(frozen=True, slots=True)
class BlockReceived(Input):
    """A block arrived from ``peer`` (its data went to disk; the brain only needs its position).

    The brain measures the peer's download rate from these, clears the request and cancels the
    duplicates still out in end-game.
    """

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class BlockArrived(Input):
    """A requested block arrived from ``peer`` and waits for the disk: it is no longer the
    peer's to deliver.

    For a client that stores blocks before it tells the brain (:class:`BlockReceived`
    follows the store): a slow disk (a storage move, a slow drive) must not count against
    peers that delivered on time. The peer's request clock is refreshed, a snub ends (the
    peer is sending), and while the block waits the peer is neither snubbed nor are its
    requests timed out (a client that stops reading peers whose blocks wait for the disk
    holds up their other requests itself); no cancel is sent for the block, and a choke
    (without the fast extension) keeps it asked of ``peer``. The block is not received yet:
    :class:`BlockReceived` once it is stored, or :class:`BlockDropped` if the client gives
    it up, must follow (libtorrent counts a block when it arrives, before its disk write).
    A block that was not asked of ``peer`` is ignored.

    >>> from bip_select import Block
    >>> BlockArrived(7, Block(0, 0, 16384))
    BlockArrived(peer=7, block=Block(piece=0, begin=0, length=16384))
    """

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class BlockDropped(Input):
    """The client dropped ``block`` from ``peer`` itself (its disk queue was full): ask for
    it again, from anyone.

    Unlike :class:`BlockRejected` the peer served it: it is not penalised, and an
    allowed-fast piece of a peer that chokes us stays allowed. It follows a
    :class:`BlockArrived` for the block, or replaces it.

    >>> from bip_select import Block
    >>> BlockDropped(7, Block(0, 0, 16384)).block.begin
    0
    """

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class BlockRejected(Input):
    """``peer`` rejected our request for ``block`` (BEP 6 reject request): ask someone else."""

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class RequestTimedOut(Input):
    """The client decided our request for ``block`` to ``peer`` timed out.

    The brain times requests out by itself on :class:`Tick` (see its queueing policy); this is
    for a client that keeps its own timers.
    """

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class BlockSent(Input):
    """We served ``block`` to ``peer``: feeds the upload-rate measurement seeders choke by."""

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class PieceVerified(Input):
    """Our copy of ``piece`` hashed ``good`` (or not): announce it, or re-download it.

    A bad piece counts against every peer that contributed a block to it; a peer that
    contributed to too many bad pieces is dropped and banned. ``ban_sole_contributor``
    False spares a peer that alone sent the bad piece the ban at once
    (``QueueConfig.ban_sole_contributor``): it loses its trust points as any source, and is banned
    only at ``ban_trust``, as libtorrent's ``torrent::piece_failed`` when the peer's
    ``received_invalid_data`` says not to disconnect it (a web seed whose copy of one file
    differs, which then stops offering that file).

    >>> PieceVerified(3, False, ban_sole_contributor=False).ban_sole_contributor
    False
    """

    piece: int
    good: bool
    ban_sole_contributor: bool = True


@dataclass(frozen=True, slots=True)
class PieceDiscarded(Input):
    """The storage dropped what it had of ``piece`` with no verdict on its data (bip_disk's
    ``PieceDiscarded``: a complete piece whose write failed or that a fault stopped first, or
    the blocks of an unfinished piece a stop, a recheck or a move dropped): it is wanted again,
    block by block (requests for it are cancelled), and no peer is blamed.

    Unlike a bad :class:`PieceVerified`, the peers that sent its blocks lose no trust and
    none is banned. A piece we have is ignored.

    >>> PieceDiscarded(3)
    PieceDiscarded(piece=3)
    """

    piece: int


@dataclass(frozen=True, slots=True)
class PieceLost(Input):
    """A piece we had is gone from storage (bip_disk's ``PieceLost``: a file lost, a failed
    re-read): it is wanted again, and announced again once verified anew.

    Peers that were told we have it are not told otherwise (the brain has no BEP 54 action);
    their requests for it are for the client to refuse.
    """

    piece: int


@dataclass(frozen=True, slots=True)
class PrioritiesChanged(Input):
    """The user changed what to download and how urgently.

    Priorities follow libtorrent: 0 means do not download, 1 to 7 from lowest to highest, 4 the
    default. ``file_priorities`` gives one priority per file of the torrent (in file order);
    each piece then takes the highest priority of the files it overlaps. ``piece_priorities``
    sets single pieces and wins over the file priorities for those pieces. ``deadlines`` asks
    for pieces by a time (streaming): piece index to the ``now`` by which it is needed; it
    replaces every earlier deadline (an empty mapping clears them) and needs a selection
    strategy with a :class:`~bip_select.Streaming` layer. A field left ``None`` changes
    nothing. Every peer's wanted pieces are recounted: to set or clear single deadlines, or
    deadlines without a ``Streaming`` strategy, :class:`PieceDeadlineSet`,
    :class:`PieceDeadlineCleared` and :class:`PieceDeadlinesCleared` are cheaper.

    >>> PrioritiesChanged(piece_priorities={0: 7, 5: 0}).piece_priorities[5]
    0
    """

    piece_priorities: Mapping[int, int] | None = None
    file_priorities: Sequence[int] | None = None
    deadlines: Mapping[int, float] | None = None

    def __post_init__(self) -> None:
        """Freeze the mappings so a caller's later edits cannot change a delivered input."""
        if self.piece_priorities is not None:
            frozen = MappingProxyType(dict(self.piece_priorities))
            object.__setattr__(self, "piece_priorities", frozen)
        if self.file_priorities is not None:
            object.__setattr__(self, "file_priorities", tuple(self.file_priorities))
        if self.deadlines is not None:
            object.__setattr__(self, "deadlines", MappingProxyType(dict(self.deadlines)))


@dataclass(frozen=True, slots=True)
class StrategyChanged(Input):
    """The user switched the piece selection strategy (sequential on or off, say).

    Takes effect for the next request to any peer; requests already sent stay. The brain's
    pending piece deadlines carry over: into the new strategy's outermost
    :class:`~bip_select.Streaming` layer (where the new strategy has its own deadline for a
    piece, in any of its layers, its own wins), or into a ``Streaming`` layer the brain puts
    around the new strategy.
    They are moved, not copied: the old strategy's layers outside the new one's chain forget
    theirs, so a deadline cleared later does not come back with the old strategy. Send
    :class:`PieceDeadlinesCleared` first to drop them. Every peer is offered requests
    again (a strategy may allow a peer pieces the old one kept from it).

    >>> from bip_select import Sequential
    >>> isinstance(StrategyChanged(Sequential()).strategy, Sequential)
    True
    """

    strategy: Strategy


@dataclass(frozen=True, slots=True)
class PieceDeadlineSet(Input):
    """``piece`` is needed by time ``when`` (the clock of ``now``), for streaming.

    libtorrent's ``set_piece_deadline``: pieces with a deadline are picked before any other,
    earliest first, from peers fast enough to deliver in time (when none is, from the holder
    that could be asked now and would deliver soonest, its queue counted), and a
    block its peer will not deliver in time is asked of a faster peer as well. A new deadline
    for the same piece replaces the old one; a piece that passes its hash check forgets its
    deadline; one for a piece we have is ignored. A strategy without a
    :class:`~bip_select.Streaming` layer gets one around it from the brain.

    Cheap: the deadline is stored in O(1), and only the peers that have ``piece`` are offered
    requests at once. A deadline does not change priorities: one on a piece of priority 0
    (a file not selected) is kept and fetches nothing until the piece is wanted (libtorrent
    raises such a piece to priority 1 instead, and leaves it raised after the deadline is
    reset; here the file selection wins).

    >>> PieceDeadlineSet(3, 12.5)
    PieceDeadlineSet(piece=3, when=12.5)
    """

    piece: int
    when: float


@dataclass(frozen=True, slots=True)
class PieceDeadlineCleared(Input):
    """``piece`` is no longer urgent (libtorrent's ``reset_piece_deadline``): it is picked in
    the strategy's usual order again. No deadline: nothing happens. O(1).

    >>> PieceDeadlineCleared(3)
    PieceDeadlineCleared(piece=3)
    """

    piece: int


@dataclass(frozen=True, slots=True)
class PieceDeadlinesCleared(Input):
    """Every piece deadline is dropped (libtorrent's ``clear_piece_deadlines``).

    A :class:`~bip_select.Streaming` layer the brain added for deadlines is removed again.
    """


@dataclass(frozen=True, slots=True)
class Tick(Input):
    """Time passed: run timers (request timeouts, snubbing, the choker's rounds).

    ``now`` repeats the time passed to :meth:`SwarmBrain.handle`, for clients that queue inputs;
    the brain uses the argument.
    """

    now: float
