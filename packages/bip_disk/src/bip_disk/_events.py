"""What the :class:`~bip_disk.DiskManager` tells its user: torrent handles, states, events.

Everything the manager decides in the background (a piece hashed good or bad, or
not stored at all, a check making progress, a disk filling up) comes out of
:meth:`DiskManager.events() <bip_disk.DiskManager.events>` as one of the frozen
:class:`DiskEvent` classes below, each naming the :class:`TorrentHandle` it is
about. Faults are events, never exceptions thrown into the caller's tasks.

>>> from bip_metainfo import InfoHash
>>> torrent = TorrentHandle(1, InfoHash(v1=bytes(20)), "x", 4)
>>> PieceVerified(torrent, 3, good=True)
PieceVerified(torrent=<TorrentHandle 1 'x'>, piece=3, good=True)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bip_metainfo import InfoHash

from ._errors import DiskError

__all__ = [
    "CheckFinished",
    "CheckProgress",
    "DiskEvent",
    "PieceDiscarded",
    "PieceLost",
    "PieceVerified",
    "StorageMoved",
    "StorageProblem",
    "TorrentFailed",
    "TorrentHandle",
    "TorrentRemoved",
    "TorrentState",
]


@dataclass(frozen=True, slots=True)
class TorrentHandle:
    """A torrent added to a :class:`~bip_disk.DiskManager`; pass it back to every call.

    Handles are compared by ``id``: a torrent removed and added again gets a new
    handle, so an old one can never act on the new torrent.

    Attributes:
        id: unique within the manager that made it.
        info_hash: the torrent's info-hash.
        name: the torrent's (sanitised) name.
        num_pieces: how many pieces it has.
    """

    id: int
    info_hash: InfoHash = field(compare=False)
    name: str = field(compare=False)
    num_pieces: int = field(compare=False)

    def __repr__(self) -> str:
        """``<TorrentHandle id 'name'>``."""
        return f"<TorrentHandle {self.id} {self.name!r}>"


class TorrentState(enum.Enum):
    """Where a torrent's storage stands.

    - ``CHECKING``: existing data is being hashed (on add, or on
      :meth:`~bip_disk.DiskManager.recheck`); writes wait until it ends.
    - ``READY``: writes and reads are served.
    - ``MOVING``: :meth:`~bip_disk.DiskManager.move_storage` is copying the
      files; writes and reads wait until it ends.
    - ``ERROR``: a storage fault stopped the torrent (see
      :class:`TorrentFailed`); writes are refused, reads of verified pieces are
      still served. :meth:`~bip_disk.DiskManager.recheck` starts it again.
    - ``REMOVED``: the torrent is gone; every call with its handle fails.
    """

    CHECKING = "checking"
    READY = "ready"
    MOVING = "moving"
    ERROR = "error"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class DiskEvent:
    """Base class of the events of :meth:`DiskManager.events() <bip_disk.DiskManager.events>`.

    Attributes:
        torrent: the torrent the event is about.
    """

    torrent: TorrentHandle


@dataclass(frozen=True, slots=True)
class PieceVerified(DiskEvent):
    """A piece whose blocks all arrived was hashed.

    ``good`` is True only once the piece's bytes were written to the torrent's
    FileSystem; a bad piece's blocks were thrown away and nothing of it written,
    so it can be downloaded again. A complete piece gets this event or a
    :class:`PieceDiscarded`, exactly one of them (none once its torrent is removed).

    The check after a move that kept files already at the destination also sends a
    ``good`` one for each piece those files hold that the torrent did not have: it
    enters :meth:`~bip_disk.DiskManager.have` as if downloaded (no peer sent it).

    Attributes:
        piece: the piece index.
        good: whether it matched its hash (v1 SHA-1, v2 merkle, or both).
    """

    piece: int
    good: bool


@dataclass(frozen=True, slots=True)
class PieceDiscarded(DiskEvent):
    """The blocks of a piece received so far were thrown away: request them again.

    A complete piece was not stored: its write failed, or a fault had stopped the
    torrent (or a recheck had begun) before it was written. Or a piece still arriving
    was dropped from memory (its ``reason`` starts with ``"blocks dropped: "``): a fault
    stopped the torrent (after its :class:`TorrentFailed`), :meth:`~bip_disk.DiskManager.recheck`
    began, a move kept a file of the piece at the destination (the check after the
    move decides about it), or no block of it had come for over a minute while writes
    waited for room in the in-flight bound (its peers left, or nobody sends it: it would
    hold its room, which every torrent shares, for good; see
    :meth:`~bip_disk.DiskManager.write_block`). Either way the torrent does not have the
    piece and holds none of its blocks: download all of it again once the torrent takes
    writes (libtorrent's piece picker gets back every block its storage drops, likewise).
    Unlike a bad
    :class:`PieceVerified`, nothing says its data was wrong: the peers that sent it are
    not to blame. The fault itself comes once, as a :class:`TorrentFailed` or (while a
    move or recheck waits) a :class:`StorageProblem`, however many pieces it cost.

    Pieces dropped because the user asked (:meth:`~bip_disk.DiskManager.discard_piece`),
    the torrent was removed or the manager closes get no event.

    >>> from bip_metainfo import InfoHash
    >>> torrent = TorrentHandle(1, InfoHash(v1=bytes(20)), "x", 4)
    >>> PieceDiscarded(torrent, 2, "writing piece 2 failed: no space").piece
    2

    Attributes:
        piece: the piece index.
        reason: why, for a user.
    """

    piece: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckProgress(DiskEvent):
    """Checking existing data advanced (one event per batch of pieces).

    Attributes:
        checked: pieces settled so far (hashed, or found missing without reading).
        total: pieces to settle in this check.
        good: pieces found good so far (resume data's trusted pieces included).
    """

    checked: int
    total: int
    good: int


@dataclass(frozen=True, slots=True)
class CheckFinished(DiskEvent):
    """Checking ended: the torrent is ``READY`` (or ``ERROR`` if a fault stopped it).

    Attributes:
        good: pieces the torrent has.
        checked: pieces whose data was read and hashed (0 when resume data held
            for every file).
        resumed: whether resume data was used.
    """

    good: int
    checked: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class TorrentFailed(DiskEvent):
    """A storage fault stopped the torrent (state ``ERROR``).

    Writes are refused from now on; pieces verified before stay verified, unless
    the fault destroyed them, in which case a :class:`PieceLost` says so.

    Attributes:
        error: what failed (usually a :class:`~bip_disk.StorageError`, with
            ``errno`` and ``path``).
        reason: a one-line explanation for a user.
    """

    error: DiskError
    reason: str


@dataclass(frozen=True, slots=True)
class PieceLost(DiskEvent):
    """A piece we had is no longer stored intact (its file shrank or vanished).

    It is no longer in :meth:`~bip_disk.DiskManager.have` nor in resume data. A read that
    fails sends it (the torrent stops: a :class:`TorrentFailed`), and so does a write that
    had to create the piece's file again, deleted behind our back (the torrent goes on). The check
    after a move that kept files already at the destination sends one too for each piece
    had that those files do not hold (``reason`` ``"kept file differs"``, or the kept file
    is missing or too short, or a fault stopped the check first): no peer is to blame,
    the piece is simply downloaded again.

    Attributes:
        piece: the piece index.
        reason: why.
    """

    piece: int
    reason: str


@dataclass(frozen=True, slots=True)
class StorageProblem(DiskEvent):
    """Something failed that does not stop the torrent (a symlink the backend cannot store).

    Attributes:
        error: what failed.
        reason: a one-line explanation for a user.
    """

    error: DiskError
    reason: str


@dataclass(frozen=True, slots=True)
class StorageMoved(DiskEvent):
    """:meth:`~bip_disk.DiskManager.move_storage` finished; the torrent uses the new FileSystem."""


@dataclass(frozen=True, slots=True)
class TorrentRemoved(DiskEvent):
    """The torrent was removed.

    Attributes:
        data_deleted: whether its files were deleted too.
    """

    data_deleted: bool
