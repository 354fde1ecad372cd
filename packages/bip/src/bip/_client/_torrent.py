"""One torrent of a session: metadata, storage, swarm, uploads, resume data, discovery.

A :class:`Torrent` goes through its phases (:class:`~bip._client.TorrentPhase`) in its own
task (:meth:`Torrent.run`), under the session's nursery:

1. ``METADATA``: a magnet link's info dictionary is fetched from the connected peers through
   bip_peer's :class:`~bip_peer.MetadataExchange`, then, for a v2-only torrent, the BEP 52
   piece layers of its files larger than one piece through its ``PieceLayerExchange`` (both
   kept in, and read back from, ``.bip/HASH.torrent``);
2. ``CHECKING``: the torrent is added to bip_disk's :class:`~bip_disk.DiskManager` on a
   :class:`~bip_disk.NativeFileSystem` with the saved resume data, and what is on disk is
   checked (only the pieces of files changed since the save are hashed);
3. ``DOWNLOADING`` / ``SEEDING``: a bip_select :class:`~bip_select.SwarmBrain` is made with the
   pieces we have and the files' priorities as piece priorities (a piece takes its files'
   highest); peers join it (:class:`Swarm`).

Its info dictionary and, for a v2 torrent, its piece layers are served to the peers (BEP 9
metadata requests, BEP 52 hash requests) from the moment they are known until it closes.

The session routes to it what concerns it: peers added and removed, their messages, and the
disk's events. Blocks go to the disk as they arrive, and only the disk's verdict
(``PieceVerified``) tells the brain a piece is ours. Requests from peers are served by a few
upload workers that read blocks from the disk. Resume data is saved every few seconds while
pieces arrive, when the download completes, and when the torrent closes, and with it the best
peers of the torrent's list and the hosts it banned (``.bip/HASH.peers``), which the next run
dials first (the ``resume`` source) and keeps banned.

The user's controls follow libtorrent's ``torrent_handle``: :meth:`Torrent.pause` /
:meth:`Torrent.resume` take it out of its swarm and back (its storage stays open), and
:meth:`Torrent.force_recheck` does too while bip_disk hashes everything again;
:meth:`Torrent.set_files` and :meth:`Torrent.set_file_priorities` change the files wanted and
their priorities 0..7 (the brain hears ``PrioritiesChanged``); :meth:`Torrent.move_storage`
moves its files and resume files, replacing, refusing or keeping the files already at the
destination (:class:`~bip._client.MoveFlags`). A paused or rechecking torrent holds no peer,
dials none (the connector skips it), is not registered with the handshaker (inbound
handshakes are refused), and runs no discovery source nor web seed. Whether it is paused is
saved with its resume files, and a torrent paused when the session closed comes back paused.

Super-seeding (BEP 16, libtorrent's ``torrent_flags::super_seeding``): with the flag set
(``TorrentOptions.super_seeding``, :meth:`Torrent.set_super_seeding`), the brain reveals pieces
through bip_select's :class:`~bip_select.SuperSeeding` while the torrent seeds, and through the
honest strategy otherwise: the strategy is switched on the running brain when the flag changes,
when the torrent completes and when it goes back to downloading. A peer's request for a piece
the brain did not reveal to it is refused (:meth:`~bip_select.SwarmBrain.may_upload`). The flag
is saved with the paused state.

Queueing (libtorrent's ``torrent_flags::auto_managed``): an auto-managed torrent
(``TorrentOptions.auto_managed``, :meth:`Torrent.set_auto_managed`) is started and held back
by its session's queue (:mod:`._queue`). Held back (:attr:`Torrent.queued`, phase ``QUEUED``)
it is out of its swarm as a paused torrent is; but :attr:`Torrent.paused` stays the user's own
flag, and only it is saved as ``paused``. The queue never holds a torrent the user paused: the
pause takes the queue's hold off, and a resume puts the torrent back in line, held until the
queue decides. Every check of an auto-managed torrent that hashes (a first one finding files
there that its resume data, if any, does not vouch for, as after an unclean stop; and
:meth:`Torrent.force_recheck`) waits for the queue's leave (``active_checking``), and none is
made while the torrent is paused (libtorrent's ``should_check_files``); a first check that
hashes nothing (files as their resume data says, or no file yet: bip_disk's
``pieces_to_hash`` says so before) is made at once, out of the queue's view, as libtorrent's
``checking_resume_data``. When a check ends, the next waiting one starts at once (the session
hears of it), and the torrent waits held until the queue decides whether it downloads or
seeds now (it announces nothing before). A running torrent that checks again keeps its slot
while its check runs, so that no other starts for the length of the check only to be queued
again (not while it waits for its turn: a long check of another would leave it idle). A
paused torrent's check under way still counts against ``active_checking``: bip_disk cannot
stop it. The queue decides in the session's own task, at most once a second (see
:mod:`._session`): the torrent only wakes it. Whether it is auto-managed and its queue
position are saved with the paused state; a change of position alone writes only the state
file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Final, TypeAlias, TypeVar

import trio

from bip_disk import (
    RACY_WINDOW_NS,
    DiskError,
    DiskManager,
    FileSystem,
    NativeFileSystem,
    PieceLost,
    ResumeData,
    ResumeDataError,
    StorageError,
    TorrentFailed,
    TorrentHandle,
    TorrentState,
    TorrentStateError,
)
from bip_disk import PieceDiscarded as DiskPieceDiscarded
from bip_disk import PieceVerified as DiskPieceVerified
from bip_handshake import MAX_BANNED_HOSTS, Handshaker, PeerAddress, PeerList, PeerSink
from bip_metainfo import Info, InfoHash, MagnetLink, Metainfo, MetainfoError
from bip_peer import (
    Bitfield,
    ExtendedHandshake,
    Have,
    HaveAll,
    MetadataExchange,
    MetadataFetchError,
    Peer,
    PeerManager,
    Piece,
    PieceLayerExchange,
    PieceLayerFetchError,
    PieceLayerServeError,
    RateMeter,
    Request,
    UploadOnly,
)
from bip_select import (
    Block,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockSent,
    HonestRevelation,
    Input,
    PeerLeft,
    PieceDeadlineCleared,
    PieceDeadlinesCleared,
    PieceDeadlineSet,
    PieceVerified,
    PrioritiesChanged,
    RarestFirst,
    Sequential,
    Strategy,
    StrategyChanged,
    SuperSeeding,
    SwarmBrain,
    TorrentGeometry,
)
from bip_select import PieceDiscarded as BrainPieceDiscarded
from bip_select import PieceLost as BrainPieceLost

from ._block_queue import BlockQueue
from ._config import (
    DEFAULT_FILE_PRIORITY,
    RESUME_DIRECTORY,
    ClientConfig,
    TorrentOptions,
    check_file_priorities,
)
from ._discovery import PeerSource, UserPeers
from ._holepunch import HolepunchCounts, HolepunchPolicy
from ._move import MoveFlags
from ._queue import QueuedTorrent, QueueKind, QueueLimits
from ._resume import MAX_SAVED_PEERS, ResumeStore, SavedState, names_same_torrent
from ._source import SourceError, resolve_peers
from ._status import TorrentPhase, TorrentStatus
from ._swarm import REASON_FAST_ABUSED, REASON_STALLED, Swarm, brain_queueing
from ._upload import Uploader, refuse_request
from ._views import PeerInfo, file_progress, peer_infos
from ._webseed import WebSeed, WebSeedState
from ._webseed_http import WebSeedClient
from ._webseed_layout import WebSeedFiles, WebSeedLayout, WebSeedUrlError, web_seed_layout

__all__ = [
    "MAX_WEB_SEEDS",
    "REASON_BAD_REQUEST",
    "REASON_PAUSED",
    "REASON_RECHECK",
    "REASON_REDUNDANT",
    "REASON_REMOVED",
    "REASON_STOPPED",
    "Torrent",
    "TorrentError",
    "check_storage_name",
    "check_storage_place",
    "layers_missing",
    "must_fetch_layers",
]

logger = logging.getLogger("bip.client")

_T = TypeVar("_T")
# The files a torrent wants: None (every file at the default priority), a selection (the
# default for those, 0 for the others) or one priority per file.
_FileChoice: TypeAlias = frozenset[int] | tuple[int, ...] | None

_RATE_WINDOW: Final = 5.0
# The clean stop's saves after the last one (_settle_resume): each waits the window at most.
_SETTLE_SAVES: Final = 2
_MAX_RESUME_RETRY: Final = 60.0
"""The longest wait before a resume save that failed is tried again (the wait doubles from
``resume_interval`` at each failure): a lasting fault warns once a minute, not at every
interval."""
REASON_BAD_REQUEST: Final = "request outside its piece"
"""Why a peer asking for bytes past the end of a piece is dropped."""
REASON_REDUNDANT: Final = "both seeds"
"""Why a connection between two peers that only upload is closed."""
UPLOAD_ONLY_EXTENSION: Final = "upload_only"
REASON_STOPPED: Final = "torrent stopped"
"""Why the peers of a torrent that failed are dropped."""
REASON_PAUSED: Final = "torrent paused"
"""Why the peers of a torrent are dropped when it is paused (:meth:`Torrent.pause`)."""
REASON_RECHECK: Final = "torrent rechecking"
"""Why the peers of a torrent are dropped when its data is checked again
(:meth:`Torrent.force_recheck`)."""
REASON_REMOVED: Final = "torrent removed"
"""Why the peers of a torrent are dropped when it leaves its session
(:meth:`bip._client.Session.remove_torrent`)."""
_DEADLINE_PRIORITY: Final = 1  # a piece of a file not selected, asked for with a deadline
# Holds that keep a torrent from the swarm: the user's pause, a recheck under way, and the
# session's queue (an auto-managed torrent waiting for its turn).
_HOLD_PAUSED: Final = "paused"
_HOLD_RECHECK: Final = "recheck"
_HOLD_QUEUED: Final = "queued"
# Seconds between two counts of the seeds in a seed's peer list (its rank in the queue): a
# pass over the whole list, not worth more often than the queue's own interval.
_SEED_COUNT_AGE: Final = 30.0
MAX_WEB_SEEDS: Final = 32
"""Web seeds of one torrent used at most (the first ones listed): a torrent can list many."""


class TorrentError(Exception):
    """A torrent cannot go on (a storage fault, metadata that cannot be used, a bad
    selection), or cannot do what it was asked (a deadline for a piece outside the torrent,
    or before its metadata is known)."""


def check_storage_name(info: Info) -> None:
    """Refuse a torrent stored as the save directory's ``.bip`` folder (its top directory, or
    its single file): there are the resume data of every torrent saved there and the DHT's
    state, which its files would overwrite (and read back, poisoned, on the next run). Only
    for the default storage (files at ``save_dir/<path>``), as :func:`check_storage_place`:
    a custom one names them its own way.

    What is checked is where each file goes, not only ``info.name``: a v2-only single-file
    torrent stores its file under its file tree's key, whatever its name says. The names are
    sanitised already (a trailing dot or a bidirectional mark is gone), and compared as
    case-insensitive file systems compare names: NTFS upper-cases both (a dotless i is an I
    there), macOS folds their case and its HFS+ ignores some format characters (U+200C,
    U+FEFF), which are left out here (every format character: none belongs in a name).

    Raises:
        TorrentError: a file or the top directory is that folder.
    """
    reserved = _folded(RESUME_DIRECTORY)
    for component in _top_components(info):
        if _folded(component) == reserved:
            raise TorrentError(
                f"the torrent's {_what(info, component)} is that of the folder"
                f" {RESUME_DIRECTORY} in the save directory, where bip keeps every torrent's"
                " resume data and the DHT's state: refused, its files would overwrite them"
            )


def check_storage_place(info: Info, save_dir: Path) -> None:
    """Refuse to store ``info``'s files in ``save_dir`` if its top directory or single file
    there is already the ``.bip`` folder under another name, which no comparison of names
    can tell: a link, a name with a code point the file system ignores, an NTFS 8.3 short
    name (``BIP~1``). :func:`check_storage_name` has refused the names that are its own.

    Blocking (a ``stat`` per top name, one for most torrents): call it in a thread. A name
    that is not there (yet) shares nothing now; one made later can only be a new entry.

    Raises:
        TorrentError: the place is that folder.
    """
    state = save_dir / RESUME_DIRECTORY
    for component in _top_components(info):
        try:
            same = (save_dir / component).samefile(state)
        except (OSError, ValueError):  # either is missing, or cannot be looked at
            continue
        if same:
            raise TorrentError(
                f"the torrent's {_what(info, component)} in {save_dir} is the folder"
                f" {RESUME_DIRECTORY} there (another name of it), where bip keeps every"
                " torrent's resume data and the DHT's state: refused, its files would"
                " overwrite them"
            )


def _top_components(info: Info) -> set[str]:
    """The first path component of every file stored (pad files never are): the name of a
    torrent with a top directory or a v1 single file, the tree's key of a v2 single file."""
    return {entry.path[0] for entry in info.files if not entry.is_pad}


def _what(info: Info, component: str) -> str:
    """``component`` named for a message, as the torrent's name or as its file's."""
    return f"name {component!r}" if component == info.name else f"file {component!r}"


def _folded(name: str) -> str:
    """``name`` as a case-insensitive file system that ignores format characters sees it."""
    return "".join(c for c in name if unicodedata.category(c) != "Cf").upper().casefold()


class Torrent:
    """A torrent in a session; made by :meth:`bip._client.Session.add_torrent`.

    Its public side is :meth:`status`, :meth:`peer_info`, :meth:`file_progress`,
    :meth:`wait_complete`, :attr:`completed`, :attr:`seeded`, :attr:`info` and
    :attr:`info_hash`; the controls libtorrent's ``torrent_handle`` gives: :meth:`pause` and
    :meth:`resume`
    (:attr:`paused`), :meth:`set_files` (:attr:`files`), :meth:`set_file_priorities`
    (:meth:`file_priorities`), :meth:`force_recheck` and :meth:`move_storage` (removing it
    is the session's:
    :meth:`bip._client.Session.remove_torrent`); and the piece order: :meth:`set_sequential`
    (:attr:`sequential`), :meth:`set_piece_deadline`, :meth:`clear_piece_deadline` and
    :meth:`clear_piece_deadlines`; super-seeding: :meth:`set_super_seeding`
    (:attr:`super_seeding`); queueing: :meth:`set_auto_managed` (:attr:`auto_managed`,
    :attr:`queued`, :attr:`queue_position`; the positions are the session's to change). The
    rest is driven by the session.

    Piece order: rarest first by default (BEP 3's advice, libtorrent's default); sequential
    on request (lowest index first, for a player or a previewer); pieces with a deadline
    before either, earliest deadline first, asked of peers fast enough to deliver in time
    (bip_select's :class:`~bip_select.RarestFirst` or :class:`~bip_select.Sequential`, which
    the brain wraps in a :class:`~bip_select.Streaming` layer while deadlines are set). Each
    change reaches the brain at once, as libtorrent's. Every order stays within the
    priorities: pieces of higher priority first, files at priority 0 not fetched, whatever
    the order, except the pieces given a deadline (:meth:`set_piece_deadline` raises such a
    piece to the lowest priority, as libtorrent does).
    """

    def __init__(
        self,
        source: Metainfo | MagnetLink,
        options: TorrentOptions,
        *,
        config: ClientConfig,
        disk: DiskManager,
        manager: PeerManager,
        handshaker: Handshaker,
        metadata: MetadataExchange,
        layers: PieceLayerExchange,
        sources: list[PeerSource],
        listen_port: Callable[[], int],
        rng: random.Random,
        on_info_hash: Callable[[Torrent, InfoHash], None],
        on_unheld: Callable[[], None] | None = None,
        web_seed_client: WebSeedClient | None = None,
        holepunch: HolepunchPolicy | None = None,
        peer_sink: PeerSink | None = None,
        paused: bool = False,
        super_seeding: bool = False,
        auto_managed: bool = False,
        queued: bool = False,
        saved_state: SavedState | None = None,
        queue_soon: Callable[[], None] | None = None,
        on_auto_managed: Callable[[Torrent, bool], None] | None = None,
        on_check_end: Callable[[], None] | None = None,
        queue_limits: Callable[[], QueueLimits] | None = None,
    ) -> None:
        """Internal: the session builds torrents. ``listen_port`` reads our TCP port as others
        should dial it now (a NAT-PMP mapping may change it while the torrent runs).
        Discovery sources feed ``peer_sink`` (the handshaker's dial queue when None);
        ``on_unheld`` is called when the torrent comes back to its swarm after a pause or a
        recheck (the connector, which dials none of its peers while :attr:`halted`, wakes
        to dial them at once). With ``paused`` the torrent starts paused (the session then
        does not register it with the handshaker); ``super_seeding`` is its flag.

        Queueing: ``auto_managed`` is the flag; with ``queued`` (and not ``paused``) the
        torrent starts held back by the queue (the session does not register it).
        ``queue_soon`` asks the session's queue to decide soon (it may be called anywhere:
        it only wakes the queue's task); without it the torrent has no queue, and is never
        held back by one. ``on_auto_managed`` hears of every change of the flag (the session
        counts its auto-managed torrents); ``on_check_end`` of every check of the data that
        ends, done or failed (its slot is free for the next: the session starts that one at
        once, without waiting for its queue's next decision). ``queue_limits`` reads the
        queue's limits now, for the seeding goals a status reports (``None``: the
        config's).

        ``saved_state`` is what its state file holds, as the session read it (once, before
        making the torrent: the flags above were decided from it and the options), so that
        only a change is written; ``None`` (it could not be read, or was not ours) or a
        record with a key ignored: written whole at the next save. Its counters are where
        the torrent's all-time transfer and times go on from."""
        self._on_unheld = on_unheld
        self._queue_limits = queue_limits
        self.options = options
        self._peer_sink: PeerSink = peer_sink if peer_sink is not None else handshaker
        self._holepunch = holepunch
        self._config = config
        self._disk = disk
        self._manager = manager
        self._handshaker = handshaker
        self._metadata = metadata
        self._layers = layers
        self._sources = sources
        self._listen_port = listen_port
        self._rng = rng
        self._on_info_hash = on_info_hash
        # The peers' blocks on their way to the disk, stored by the torrent's own task: the
        # session's router never waits for the disk (_store_block). While the queue is over
        # its bound the peers feeding it are not read (_queue_block, _blocks_drained).
        self._blocks: BlockQueue[tuple[Swarm, Peer, Piece]] = BlockQueue()
        self._magnet = source if isinstance(source, MagnetLink) else None
        # BEP 19: the torrent's url-list, or a magnet link's ws=.
        urls = source.url_list if isinstance(source, Metainfo) else source.web_seeds
        self._web_seed_urls = tuple(dict.fromkeys(urls)) if options.web_seeds else ()
        self._web_seed_client = web_seed_client if web_seed_client is not None else WebSeedClient()
        self.web_seeds: list[WebSeed] = []
        """The torrent's web seeds, once it downloads (every state; a pause or a new
        selection replaces those it stopped by new ones)."""
        self._web_seeds_made = False
        # BEP 52 piece layers by pieces root: the .torrent's, or fetched for a magnet link.
        self._piece_layers: dict[bytes, bytes] = (
            dict(source.piece_layers) if isinstance(source, Metainfo) else {}
        )
        # The files wanted: every one at the default priority (None), a selection (4 for
        # those, 0 for the rest), or one priority per file. Checked against the torrent's
        # files once its metadata is known.
        self._file_choice: _FileChoice = (
            options.file_priorities if options.file_priorities is not None else options.files
        )
        self._link_choice: frozenset[int] | None = None  # the choice a magnet's ``so`` made
        if isinstance(source, Metainfo):
            self.metainfo: Metainfo | None = source
            self.info: Info | None = source.info
            self._info_hash = source.info.info_hash
            self._name = source.info.name
            # Now, not when run() gets there (after the resume store's reads): the session
            # takes this torrent's peers from now on, and a private torrent's must never
            # see ut_metadata in our extended handshake (BEP 27), nor a request answered.
            # The flag as parsed: serve() does not decode the dictionary again.
            metadata.serve(self._info_hash, source.info.to_bytes(), private=source.info.private)
        else:
            self.metainfo = None
            self.info = None
            self._info_hash = source.info_hash
            self._name = source.display_name or source.info_hash.hex()
            if self._file_choice is None and source.select_only is not None:
                self._file_choice = frozenset(
                    index for low, high in source.select_only for index in range(low, high + 1)
                )
                # The link's ``so`` names files it cannot see: once the metadata tells how
                # many there are, indices past them are dropped (libtorrent's torrent::init
                # truncates the link's priorities), where an option's would fail the torrent.
                self._link_choice = self._file_choice
        self._store = ResumeStore(options.save_dir, self._info_hash) if options.resume else None
        self._filesystem: FileSystem | None = None
        self.handle: TorrentHandle | None = None
        self.swarm: Swarm | None = None
        self.peers: set[Peer] = set()
        self.peer_list: PeerList | None = None
        """Every address the torrent's sources gave, with its history (the session's
        connector keeps it and dials from it); ``None`` outside a session."""
        self._banned: set[IPv4Address | IPv6Address] = set()
        self.completed = trio.Event()
        """Set once every selected piece is verified. An event is never cleared: when a new
        selection (:meth:`set_files`, a deadline's piece) wants pieces we lack, a new unset
        event takes its place (read the attribute again rather than keep the event)."""
        self.seeded = trio.Event()
        """Set once every piece of the torrent is verified (a seed, whatever the selection:
        trackers hear ``completed`` then). Never cleared either: a new unset event takes its
        place when a piece goes missing again (a recheck, a move's check)."""
        self.ready = trio.Event()
        """Set once the data on disk is checked; at once for a magnet link (trackers and the
        DHT are asked for peers from then on)."""
        if self.info is None:
            self.ready.set()
        self._stopped = trio.Event()  # failed, or closed
        self._scope = trio.CancelScope()
        self._phase = TorrentPhase.METADATA if self.info is None else TorrentPhase.CHECKING
        self._error: str | None = None
        self._bug_met = False  # an unexpected error was logged (unexpected())
        self._wanted: frozenset[int] = frozenset()
        self._total = 0
        # Set with the metadata: sizes below count file data only, never BEP 47 pad bytes
        # (the progress shown, as libtorrent counts it; and a tracker's ``left``, BEP 3's
        # bytes still to download, where libtorrent counts them).
        self._geometry: TorrentGeometry | None = None
        self._done = 0
        # The file data of the pieces not verified, over the whole torrent whatever the
        # selection: a tracker's ``left`` (BEP 3, as libtorrent's bytes_left()). Counted
        # from what is on disk when the brain is made, then kept by each piece verified or
        # lost; read only while the brain exists (transfer()).
        self._unverified = 0
        self._downloaded = 0
        # The bytes of the pieces that failed their hash check (libtorrent's
        # total_failed_bytes): left out of the downloaded trackers hear (transfer()).
        self._corrupt = 0
        self._uploaded = 0
        self._bad_pieces = 0
        now = trio.current_time()
        self._down = RateMeter(window=_RATE_WINDOW, now=now)
        self._up = RateMeter(window=_RATE_WINDOW, now=now)
        self._resume_dirty = trio.Event()
        # The last save of the disk's record failed: the next is tried later and later.
        self._resume_save_failed = False
        self._uploader = Uploader(disk, manager, on_sent=self._sent)
        # The piece order. Remembered before the brain exists (a magnet link's metadata,
        # the check of the data) and given to it when it is made.
        self._sequential = False
        # Piece -> when it is needed (trio's clock), until the brain exists (then the brain
        # keeps them); at most one per piece: bounded by the piece count.
        self._pending_deadlines: dict[int, float] = {}
        # Pieces of files not selected raised to _DEADLINE_PRIORITY by a deadline (bounded by
        # the piece count); a new file selection drops them, as libtorrent's
        # prioritize_files sets every piece's priority from the files.
        self._raised: set[int] = set()
        # Those of them raised while the torrent checked (no brain to say the piece is had):
        # the raise of each the check finds is dropped when the brain is made.
        self._check_raised: set[int] = set()
        # The piece priorities the brain has (None: every piece at the default).
        self._priorities: list[int] | None = None
        # Whether set_files or set_file_priorities chose the files (then the choice is saved,
        # and wins over a saved one).
        self._selection_set = False
        self._selection_dirty = False
        # Every hash the handshaker knows the torrent by (a magnet's partial one, then the
        # metadata's): all unregistered when it is paused or removed, and registered again
        # in this order on resume (the fuller one last: it wins the swarm ids they share).
        self._registered: dict[InfoHash, None] = {self._info_hash: None}
        # Pause and recheck: while any hold is on, the torrent has no peers, dials none,
        # refuses inbound handshakes and runs no discovery source nor web seed.
        self._holds: set[str] = set()
        self._unheld = trio.Event()
        # Set (then replaced) whenever what a waiting check waits for may have changed: the
        # queue's hold, the pause, the flag (_check_turn).
        self._check_gate = trio.Event()
        # Since when no hold is on (None while one is): the queue gives a torrent started
        # some time before it can be found slow.
        self._running_since: float | None = None
        if paused:
            # Nothing to leave yet: no peer, no source, no web seed, not registered.
            self._holds.add(_HOLD_PAUSED)
        elif queued:
            self._holds.add(_HOLD_QUEUED)  # likewise
        else:
            self._unheld.set()
            self._running_since = now
        self._auto_managed = auto_managed
        self._queue_position = -1  # the session's to set
        self._queue_soon = queue_soon
        self._on_auto_managed = on_auto_managed
        self._on_check_end = on_check_end
        self._disk_checking = False  # bip_disk checks the data now (it cannot be stopped)
        # While it checks again after it ran as a download or a seed (auto-managed): that
        # kind, whose slot it keeps while its check runs, until it ends (see _queue_facts).
        self._check_keeps: QueueKind | None = None
        # Its check is none of the queue's (libtorrent's checking_resume_data): until the
        # disk says whether it will hash anything (a torrent whose metadata is known is so
        # from the start: no decision lets it in before), and for good if it will not (it
        # vouches for resume data, or finds no file). A magnet's is so once its metadata
        # comes.
        self._unqueued_check = self.info is not None
        # Only the state file to write (a new queue position): not the whole resume data.
        self._state_dirty = trio.Event()
        # Counted over all its runs, from its state file (libtorrent's resume data keeps
        # them): the seeding goals go on from them, as libtorrent's seed_rank. The trackers
        # hear this run's transfer alone (transfer()), as libtorrent's announces.
        totals = SavedState() if saved_state is None else saved_state
        self._seeding_time = float(totals.finished_time)  # every selected piece, unheld
        self._active_time = float(totals.active_time)  # out of any hold (the seeding goals)
        self._seed_time = float(totals.seeding_time)  # every piece: libtorrent's seeding_time
        self._earlier_uploaded = totals.total_uploaded  # before this run
        self._earlier_downloaded = totals.total_downloaded
        self._last_tick = now
        self._seeds_counted_at: float | None = None
        self._swarm_seed_count = 0
        # What the state file holds (None: unknown, written whole at the next save). A record
        # with an ignored key is not what we would write: written again too.
        self._saved_state = saved_state if saved_state is None or not saved_state.ignored else None
        # Nothing to tell yet: no brain, no peer (_make_swarm and the handshakes read it).
        self._super_seeding = super_seeding
        self._told_upload_only = False  # what the peers were last told (BEP 21)
        self._pausable: set[trio.CancelScope] = set()  # cancelled by a hold
        self._nursery: trio.Nursery | None = None  # run()'s, once running
        # run() began, and is done opening the storage (the disk has the torrent, or never
        # will from this run): a removal or close waits for it (_settled), as an add to the
        # disk under way ends on an uncancellable thread and only then stores its handle.
        self._run_began = False
        self._storage_settled = trio.Event()
        self._moving = False
        self._removed = False
        # Its close has begun (the session's, which closes its torrents one by one): every
        # control is refused from then on, before its own close() comes (_begin_close).
        self._closing = False
        # One save at a time: two would write the same temporary files.
        self._save_lock = trio.Lock()
        self._save_now = trio.Event()  # cuts the wait between two saves short (a pause)
        self._last_pieces = 0

    def __repr__(self) -> str:
        return f"<Torrent {self._name!r} {self._info_hash.hex()}>"

    # -- public -----------------------------------------------------------------------------

    @property
    def info_hash(self) -> InfoHash:
        """The torrent's hashes (a magnet link's v1-only hash gains its v2 half with the
        metadata of a hybrid torrent)."""
        return self._info_hash

    @property
    def listen_port(self) -> int:
        """Our TCP port as peers should dial it, announced to trackers and the DHT (read
        afresh: the external port a NAT-PMP gateway maps, once granted; 0 when we do not
        listen)."""
        return self._listen_port()

    @property
    def private(self) -> bool:
        """Whether the torrent is private (BEP 27); ``False`` while the metadata is unknown."""
        return self.info is not None and self.info.private

    @property
    def num_pieces(self) -> int | None:
        """The piece count, once the metadata is known."""
        return None if self.info is None else self.info.num_pieces

    def transfer(self) -> tuple[int, int, int]:
        """``(uploaded, downloaded, left)`` payload bytes, for trackers (the DHT's BEP 33
        seed flag wants ``left`` 0 too).

        ``left`` is what BEP 3 says: the bytes this peer still has to download, over the
        whole torrent whatever files are selected, as libtorrent's ``bytes_left()``: the
        file data (never pad bytes) of the pieces not verified. It is 0 only once every
        piece is verified: a finished partial download (:meth:`set_files`) is no seed, and
        a tracker that counted it as one could give it no seeds. Before the data is checked
        (or while it is checked again) nothing counts as had: the whole file data. Before
        the metadata is known it is 1: unknown, but not a seed (libtorrent sends 16 KiB;
        any value but 0 says the same). :meth:`status`'s ``total`` and ``done`` stay about
        the selection.

        ``downloaded`` leaves out the pieces that failed their hash check (:attr:`corrupt`),
        as libtorrent's announce does; :meth:`status`'s ``downloaded`` counts every byte.
        """
        info = self.info
        swarm = self.swarm
        if info is None:
            left = 1
        elif swarm is None:
            # As libtorrent's bytes_left() without a piece picker. Before the storage is
            # opened (a magnet's metadata just came) the geometry is not known yet.
            geometry = self._geometry
            left = info.total_size if geometry is None else geometry.data_length
        elif swarm.brain.is_seed:
            left = 0
        else:
            # At least 1: a piece all of pad bytes counts for nothing, but is not had yet.
            left = max(self._unverified, 1)
        # The bytes of failed pieces were received but are not had: as libtorrent announces
        # total_payload_download - total_failed_bytes (a liar would inflate it unbounded).
        return self._uploaded, max(self._downloaded - self._corrupt, 0), left

    @property
    def corrupt(self) -> int:
        """Bytes of the pieces that failed their hash check so far (libtorrent's
        ``total_failed_bytes``): received, counted in
        :meth:`status`'s ``downloaded``, but left out of :meth:`transfer`'s."""
        return self._corrupt

    def status(self) -> TorrentStatus:
        """A snapshot of the torrent's progress; ``REMOVED`` once removed from its session,
        whatever it did before, with no transfer rates (the last seconds' would linger)."""
        now = trio.current_time()
        seeds = sum(1 for peer in self.peers if peer.connection.peer_has_all)
        punched = (
            self._holepunch.counts(self._info_hash)
            if self._holepunch is not None
            else HolepunchCounts()
        )
        phase = self._phase
        if self._removed:
            phase = TorrentPhase.REMOVED
        elif phase is not TorrentPhase.FAILED:
            if self.paused:
                phase = TorrentPhase.PAUSED
            elif self.queued:
                phase = TorrentPhase.QUEUED
        return TorrentStatus(
            name=self._name,
            phase=phase,
            total=self._total,
            done=self._done,
            pieces=self._pieces(),
            num_pieces=self.num_pieces or 0,
            download_rate=0.0 if self._removed else self._down.rate(now),
            upload_rate=0.0 if self._removed else self._up.rate(now),
            downloaded=self._downloaded,
            uploaded=self._uploaded,
            all_time_downloaded=self._earlier_downloaded + self._downloaded,
            all_time_uploaded=self._earlier_uploaded + self._uploaded,
            peers=len(self.peers),
            seeds=seeds,
            utp_peers=sum(1 for peer in self.peers if peer.transport == "utp"),
            web_seeds=0 if self.swarm is None else len(self.swarm.web_seeds),
            bad_pieces=self._bad_pieces,
            error=self._error,
            checked=self._checked(),
            holepunch_rendezvous=punched.rendezvous,
            holepunch_connects=punched.connects,
            holepunch_peers=punched.peers,
            known_peers=0 if self.peer_list is None else len(self.peer_list),
            dialling=0 if self.peer_list is None else self.peer_list.dialling,
            super_seeding=self.super_seeding,
            auto_managed=self.auto_managed,
            queue_position=self.queue_position,
            active_time=self._active_time,
            seeding_time=self._seeding_time,
            seed_goals_met=self._seed_goals_met(),
        )

    def peer_info(self) -> tuple[PeerInfo, ...]:
        """Each connected peer as a client's peer list shows it (libtorrent's
        ``get_peer_info``), ordered by address: see :class:`~bip._client.PeerInfo`."""
        return peer_infos(self.peers, self._manager.statistics().peers)

    def file_progress(self) -> tuple[int, ...]:
        """The bytes of each file (in :attr:`info`'s file order) in verified pieces
        (libtorrent's ``file_progress`` with piece granularity); ``()`` before the metadata
        is known. A BEP 47 pad file counts the bytes it has in those pieces too."""
        if self.info is None:
            return ()
        verified: frozenset[int] = frozenset()
        if self.handle is not None:
            with contextlib.suppress(TorrentStateError):
                verified = self._disk.have(self.handle)
        return file_progress(self.info, verified)

    def _pieces(self) -> int:
        """Pieces verified, all files: the disk's count, or the last one once the torrent
        left the disk (closed, removed: its status stays readable). The disk's status
        counts them in O(1); ``have`` would copy every verified piece on each call."""
        if self.handle is not None:
            with contextlib.suppress(TorrentStateError):
                self._last_pieces = self._disk.status(self.handle).have
        return self._last_pieces

    def _checked(self) -> float | None:
        if self._phase is not TorrentPhase.CHECKING or self.handle is None:
            return None
        try:
            disk = self._disk.status(self.handle)
        except TorrentStateError:  # removed while checking
            return None
        return disk.checked / disk.to_check if disk.to_check else 0.0

    async def wait_complete(self) -> None:
        """Wait until every selected piece is verified.

        The selection is the one when called: a later :meth:`set_files` (or deadline) that
        wants more does not hold back a wait that already returned, and a wait started then
        waits for the new selection. A wait started during a check of the data
        (:meth:`force_recheck`, a move's check of kept files) waits for the check's
        result.

        Raises:
            TorrentError: the torrent failed (a storage fault...), was closed or removed before.
        """
        completed = self.completed  # replaced (never cleared) when the selection grows
        async with trio.open_nursery() as nursery:

            async def watch(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch, completed)
            nursery.start_soon(watch, self._stopped)
        if not completed.is_set():
            gone = "removed" if self._removed else "closed"
            raise TorrentError(self._error or f"the torrent was {gone}")

    # -- controls (libtorrent's torrent_handle) ---------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether the user paused the torrent (:meth:`pause`); a torrent the queue holds
        back is :attr:`queued`, not paused."""
        return _HOLD_PAUSED in self._holds

    @property
    def queued(self) -> bool:
        """Whether the session's queue holds the torrent back (it is auto-managed, and it
        is not its turn): out of its swarm as if paused, its check not started if it was
        not; never while :attr:`paused`."""
        return _HOLD_QUEUED in self._holds

    @property
    def halted(self) -> bool:
        """Whether the torrent stays out of its swarm now: paused, queued, rechecking its
        data, or stopped for good (failed, closed, removed): the session's connector dials
        none of its peers then."""
        return bool(self._holds) or self._stopped.is_set()

    @property
    def auto_managed(self) -> bool:
        """Whether the session's queue starts and stops the torrent
        (:meth:`set_auto_managed`)."""
        return self._auto_managed

    @property
    def queue_position(self) -> int:
        """The torrent's place in its session's queue, 0 first (libtorrent's
        ``queue_position``): torrents that check or download their data have one, whether
        auto-managed or not (only the auto-managed ones wait for their turn); ``-1`` for a
        seed, or a torrent out of a session.
        :meth:`bip._client.Session.set_queue_position` and its siblings move it."""
        return self._queue_position

    def set_auto_managed(self, enabled: bool) -> None:
        """Let the session's queue start and stop the torrent (``True``), or not
        (libtorrent's ``set_flags`` / ``unset_flags`` with ``torrent_flags::auto_managed``).

        Set, the torrent keeps its place in the queue (every download has one) and the
        queue decides soon (within a second): it may be queued then (phase ``QUEUED``: out
        of its swarm, as if paused) if the queue has no room for it. Cleared, a torrent the
        queue held back starts at once, as a "force start" does, and is never queued again
        (it still counts against ``ClientConfig.active_limit``), keeping its place in line
        for when it is set again. Saved with the resume files, as the paused state is, and
        wins over a saved flag. A torrent the user paused stays paused either way. Setting
        it as it is does nothing.

        Raises:
            TorrentError: the torrent failed, or was closed or removed.
        """
        enabled = bool(enabled)
        self._check_alive("change its queueing")
        if enabled is self._auto_managed:
            return
        self._auto_managed = enabled
        logger.debug("%s: %sauto-managed", self._name, "" if enabled else "not ")
        if self._on_auto_managed is not None:
            self._on_auto_managed(self, enabled)
        self._resume_dirty.set()  # saved soon, for the next run too
        if not enabled:
            self._check_keeps = None  # out of the queue: no slot of its to keep
            self._dequeue()
        self._open_check_gate()
        self._decide_now()

    @property
    def _has_queue(self) -> bool:
        """Whether a session's queue manages the torrent now."""
        return self._auto_managed and self._queue_soon is not None

    def _enqueue(self) -> None:
        """Internal (the session's queue): hold the torrent back, as a pause does (its
        peers are dropped with :data:`REASON_PAUSED`), until :meth:`_dequeue`. Not a
        paused torrent (the queue leaves those alone), nor one stopped for good."""
        if self.queued or self.paused or self._stopped.is_set():
            return
        logger.debug("%s: queued", self._name)
        self._hold(_HOLD_QUEUED, REASON_PAUSED)

    def _dequeue(self) -> None:
        """Internal (the session's queue): its turn; back to its swarm unless another hold
        is on."""
        if not self.queued:
            return
        logger.debug("%s: started by the queue", self._name)
        self._open_check_gate()
        self._release(_HOLD_QUEUED)

    def _open_check_gate(self) -> None:
        """Wake a check waiting for its turn (:meth:`_check_turn`): what it waits for may
        have changed."""
        self._check_gate.set()
        self._check_gate = trio.Event()

    async def _check_turn(self) -> None:
        """Return when the torrent may check its data: at once unless auto-managed; else
        once the queue lets it (``active_checking``: a check started cannot be stopped) and
        while it is not paused (libtorrent's ``should_check_files``: a paused torrent does
        not check, so that a session restarted with many paused torrents hashes nothing).
        A paused torrent not auto-managed checks at once, unlike libtorrent's (whose
        ``should_check_files`` wants every torrent unpaused): bip documents that its pause
        holds a torrent out of its swarm only (:meth:`pause`,
        :meth:`bip._client.Session.add_torrent`)."""
        while self._has_queue and (self.queued or self.paused):
            await self._check_gate.wait()

    def _set_queue_position(self, position: int) -> None:
        """Internal (the session's queue): the torrent's place in line (-1: none); saved
        in the state file when it changes (that file alone: a shift of the line moves many
        torrents at once, and their resume data did not change)."""
        if position != self._queue_position:
            self._queue_position = position
            self._state_dirty.set()

    def _queue_kind(self) -> QueueKind:
        """What the torrent counts as in the queue: its phase, a magnet's metadata fetch
        counting as a download, anything stopped for good as failed."""
        phase = self._phase
        if self._stopped.is_set() or phase is TorrentPhase.FAILED:
            return QueueKind.FAILED
        if phase is TorrentPhase.CHECKING:
            return QueueKind.CHECKING
        if phase is TorrentPhase.SEEDING:
            return QueueKind.SEEDING
        return QueueKind.DOWNLOADING  # METADATA too, as libtorrent's downloading_metadata

    def _queue_facts(self, key: int, now: float) -> QueuedTorrent:
        """Internal (the session's queue): what the queue needs to know of the torrent."""
        kind = self._queue_kind()
        keeps = self._check_keeps if kind is QueueKind.CHECKING and not self.paused else None
        return QueuedTorrent(
            key=key,
            kind=kind,
            auto_managed=self._auto_managed,
            paused=self.paused,
            position=self._queue_position,
            started=self._running_since,
            # All-time, as the seeding goals count them (the slow test takes differences).
            downloaded=self._earlier_downloaded + self._downloaded,
            uploaded=self._earlier_uploaded + self._uploaded,
            check_running=kind is QueueKind.CHECKING and self._disk_checking,
            swarm_seeds=self._swarm_seeds(now) if kind is QueueKind.SEEDING else 0,
            seeding_time=self._seeding_time,
            ratio=(self._earlier_uploaded + self._uploaded) / max(self._total, 1),
            keeps=keeps,
            active_time=self._active_time,
            size=self._size(),
        )

    def _size(self) -> int:
        """The torrent's file data, every file whatever the selection (libtorrent's
        ``total_size``, the share ratio's divisor); 0 before the metadata is known."""
        return 0 if self.info is None else self.info.total_size

    def _seed_goals_met(self) -> bool:
        """Whether the torrent is complete and met one of the session's seeding goals (the
        queue's limits now: :meth:`QueueLimits.seed_goals_met`); never once removed (its
        files may be deleted), as its status is never complete then."""
        if self._phase is not TorrentPhase.SEEDING or self._removed:
            return False
        read = self._queue_limits
        limits = read() if read is not None else self._config.queue_limits
        return limits.seed_goals_met(
            uploaded=self._earlier_uploaded + self._uploaded,
            downloaded=self._earlier_downloaded + self._downloaded,
            size=self._size(),
            active_time=self._active_time,
            seeding_time=self._seeding_time,
        )

    def _swarm_seeds(self, now: float) -> int:
        """The seeds the torrent's peer list knows (marked when they were connected; kept
        while queued, as libtorrent falls back on its peer list's seeds without a scrape),
        counted again at most every :data:`_SEED_COUNT_AGE` seconds."""
        peer_list = self.peer_list
        if peer_list is None:
            return 0
        counted = self._seeds_counted_at
        if counted is None or not 0 <= now - counted < _SEED_COUNT_AGE:
            self._swarm_seed_count = sum(1 for entry in peer_list.entries() if entry.seed)
            self._seeds_counted_at = now
        return self._swarm_seed_count

    def _decide_now(self) -> None:
        """Ask the session's queue to decide soon: it only wakes the queue's task, which
        decides at most once a second (a burst of adds or of checks ending asks once)."""
        if self._queue_soon is not None:
            self._queue_soon()

    def _hold_for_decision(self) -> None:
        """An auto-managed torrent whose check ended (or about to check): held by the
        queue until it decides, so that nothing is announced, dialled or checked before."""
        if self._has_queue:
            self._enqueue()
            self._decide_now()

    def _enter(self, phase: TorrentPhase) -> None:
        """Go to ``phase``; the queue hears of a change soon (the torrent may now count
        against another limit, or against none)."""
        if phase is self._phase:
            return
        self._phase = phase
        if phase in (TorrentPhase.SEEDING, TorrentPhase.FAILED):
            # Out of line at once (its status says so now); the others close up when the
            # session renumbers, soon.
            self._set_queue_position(-1)
        self._decide_now()

    def pause(self) -> None:
        """Leave the swarm, keeping everything else (libtorrent's ``pause()``, graceful).

        At once: every peer is disconnected (:data:`REASON_PAUSED`), none is dialled (the
        peer list is kept, and still learns addresses), inbound handshakes for the torrent
        are refused, the discovery sources stop (trackers hear ``stopped``, DHT announces
        end), the web seeds stop, and the resume data is saved soon after. The storage and
        its verified pieces stay open; :meth:`status` says ``PAUSED``. The paused state is
        saved with the resume data (``.bip/HASH.state``): the next
        :meth:`~bip._client.Session.add_torrent` with the same ``save_dir`` starts it paused
        (unless ``TorrentOptions.paused`` says otherwise), as libtorrent's resume data does.

        During ``METADATA`` the metadata fetch stops with the peers, and starts over on
        :meth:`resume`. During ``CHECKING`` the check of the data goes on to its end (bip_disk
        checks in the background, and stopping half-way would only cost a new check): the
        torrent is then ready, but stays paused. Pausing a paused torrent does nothing.

        Raises:
            TorrentError: the torrent failed, or was closed or removed (nothing is left to
                pause or resume).
        """
        self._check_alive("pause")
        if self.paused:
            return
        logger.debug("%s: paused", self._name)
        self._hold(_HOLD_PAUSED, REASON_PAUSED)
        # The queue leaves a paused torrent alone: the pause holds it from now on (an
        # auto-managed one's check waits for the resume), and it keeps no slot.
        self._holds.discard(_HOLD_QUEUED)
        self._check_keeps = None
        self._open_check_gate()
        self._resume_dirty.set()
        self._save_now.set()
        self._decide_now()  # its slot, if it had one, is free

    def resume(self) -> None:
        """Join the swarm again after :meth:`pause` (libtorrent's ``resume()``): the sources
        start again (trackers hear ``started``), peers are dialled and accepted, the web
        seeds start again (one given up on is tried again; a banned one stays out), a
        metadata fetch starts over; the resume data saved next says it is no longer paused.
        Resuming a torrent not paused does nothing. An auto-managed torrent goes back in
        line instead, held (``QUEUED``) until the session's queue decides, soon, whether it
        runs or waits.

        Raises:
            TorrentError: the torrent failed, or was closed or removed.
        """
        self._check_alive("resume")
        if not self.paused:
            return
        logger.debug("%s: resumed", self._name)
        if self._has_queue:
            # Held by the queue until it decides (soon), rather than started and stopped
            # again at once (trackers would hear "started", then "stopped").
            self._holds.add(_HOLD_QUEUED)
        self._release(_HOLD_PAUSED)
        self._open_check_gate()
        self._resume_dirty.set()  # no longer paused, for the next run too
        self._decide_now()

    @property
    def super_seeding(self) -> bool:
        """Whether the super-seeding flag is set (:meth:`set_super_seeding`); it takes
        effect while the torrent seeds (:attr:`super_seeding_active`)."""
        return self._super_seeding

    @property
    def super_seeding_active(self) -> bool:
        """Whether the torrent super-seeds now: the flag is set and it seeds."""
        swarm = self.swarm
        return swarm is not None and isinstance(swarm.brain.revelation, SuperSeeding)

    def set_super_seeding(self, enabled: bool) -> None:
        """Set or clear the super-seeding flag (libtorrent's ``set_flags`` /
        ``unset_flags`` with ``torrent_flags::super_seeding``); it is saved with the resume
        files, as the paused state is, and wins over a saved one.

        BEP 16, for an initial seeder: while the torrent seeds (``SEEDING``), each peer is
        told we have nothing, then one rare piece at a time, and its next piece only once
        that one spread (``ClientConfig.strict_super_seeding`` says how); its requests for
        pieces not revealed to it are refused. Set on a seeding torrent, the peers told
        everything already stay told and only the peers that join from then on are
        super-seeded; cleared, every peer is told every piece it was not (haves, paced).
        While the torrent downloads the flag waits: it takes effect when the torrent
        completes, and a seed that goes back to downloading (a new selection) reveals
        honestly until it completes again. Setting it as it is does nothing.

        Raises:
            TorrentError: the torrent failed, or was closed or removed.
        """
        enabled = bool(enabled)
        self._check_alive("change super-seeding")
        if self._super_seeding is enabled:
            return
        self._super_seeding = enabled
        logger.debug("%s: super-seeding %s", self._name, "on" if enabled else "off")
        self._resume_dirty.set()  # saved soon, for the next run too
        self._sync_revelation()

    def _sync_revelation(self) -> None:
        """Switch the brain's revelation strategy to what the flag and the phase want:
        super-seeding while the flag is set and the torrent seeds, honest otherwise."""
        self._sync_upload_only()
        swarm = self.swarm
        if swarm is None:
            return  # the brain is made with the right one (_make_swarm)
        want = self.super_seeding and self._phase is TorrentPhase.SEEDING
        brain = swarm.brain
        if want == isinstance(brain.revelation, SuperSeeding):
            return
        have = brain.revelation.have
        num_pieces = brain.geometry.num_pieces
        strategy = (
            SuperSeeding(num_pieces, have, rng=self._rng, strict=self._config.strict_super_seeding)
            if want
            else HonestRevelation(num_pieces, have)
        )
        logger.debug(
            "%s: %s", self._name, "super-seeding" if want else "revealing every piece again"
        )
        swarm.carry_out(brain.set_revelation(strategy, trio.current_time()))

    def _check_alive(self, verb: str) -> None:
        if self._removed:
            raise TorrentError(f"{self._name}: cannot {verb}: the torrent was removed")
        if self._phase is TorrentPhase.FAILED:
            raise TorrentError(f"{self._name}: cannot {verb}: the torrent failed: {self._error}")
        if self._closing or self._stopped.is_set():
            raise TorrentError(f"{self._name}: cannot {verb}: the torrent was closed")

    def _hold(self, hold: str, reason: str) -> None:
        """Put ``hold`` on; the first one takes the torrent out of its swarm."""
        first = not self._holds
        self._holds.add(hold)
        if not first:
            return
        self._running_since = None
        self._unheld = trio.Event()
        for scope in list(self._pausable):
            scope.cancel()
        self._stop_web_seeds(reason)
        self._leave_swarm(reason)

    def _leave_swarm(self, reason: str) -> None:
        """Leave the handshaker (queued dials dropped, inbound handshakes refused, for every
        hash the torrent is known by) and disconnect every peer for ``reason``: a
        hold (the hashes are registered again when it ends), a failure or a removal."""
        for info_hash in self._registered:
            self._handshaker.unregister(info_hash)
        for peer in list(self.peers):
            self._manager.remove_peer(peer, reason)

    def _release(self, hold: str) -> None:
        """Take ``hold`` off; the last one brings the torrent back to its swarm."""
        self._holds.discard(hold)
        if self._holds or self._stopped.is_set():
            return
        self._running_since = trio.current_time()
        for info_hash in self._registered:
            self._handshaker.register(info_hash)
        if self._on_unheld is not None:
            self._on_unheld()
        self._unheld.set()
        self._restart_web_seeds(retry=True)

    @contextlib.contextmanager
    def _while_unheld(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that the next hold cancels (at once if one is on)."""
        with trio.CancelScope() as scope:
            if self._holds:
                scope.cancel()
            self._pausable.add(scope)
            try:
                yield scope
            finally:
                self._pausable.discard(scope)

    @property
    def files(self) -> frozenset[int] | None:
        """The indices of the files selected for download (``None``: every file): those
        whose priority (:meth:`file_priorities`) is above 0 (``None`` when every file but the
        pad files is)."""
        choice = self._file_choice
        info = self.info
        if info is None:  # before a magnet's metadata: as chosen
            if isinstance(choice, tuple):
                selected = frozenset(index for index, priority in enumerate(choice) if priority)
                return None if len(selected) == len(choice) else selected
            return choice
        # From the priorities, whatever form the choice has: a pad file named in a selection
        # is not selected (its priority stays 0), and every file but the pads is every file.
        priorities = _per_file(choice, info)
        selected = frozenset(index for index, priority in enumerate(priorities) if priority)
        return None if len(selected) == sum(not e.is_pad for e in info.files) else selected

    def file_priorities(self) -> tuple[int, ...]:
        """Each file's priority, 0..7 (libtorrent's ``get_file_priorities``), in
        :attr:`info`'s file order: 0 for a file not downloaded, 4 by default, and always 0
        for a BEP 47 pad file (nothing to download: libtorrent's too); ``()`` before the
        metadata is known (the priorities chosen meanwhile apply once it is)."""
        info = self.info
        if info is None:
            return ()
        return _per_file(self._file_choice, info)

    def set_file_priorities(self, priorities: Sequence[int] | Mapping[int, int]) -> None:
        """Set the files' priorities (libtorrent's ``prioritize_files``, or with a mapping
        its ``file_priority(index, priority)`` for a few files).

        ``priorities`` is one int in 0..7 per file (the torrent's order, pad files included),
        or a mapping ``{file index: priority}`` that changes those files only. 0 does not
        download the file; pieces of higher priority are asked for first (whatever the
        order: rarest first or sequential within a priority); 4 is the default. A piece
        takes the highest priority of its files, so a piece shared with a wanted file is
        fetched whole. Everything else is as :meth:`set_files` (which sets 4 and 0): the
        brain hears it at once, ``total``/``done``/``left`` follow, a complete torrent that
        now wants more goes back to ``DOWNLOADING`` (or the reverse), pieces a deadline
        raised take their files' priority again, the blocks received of a piece no longer
        wanted are dropped (fetched whole if it is wanted again; libtorrent keeps them on
        disk), and the priorities are saved with the resume data (``.bip/HASH.selection``)
        for the next run. A BEP 47 pad file's priority is ignored: it stays 0 (libtorrent's
        rule).

        Raises:
            TypeError: ``priorities`` is neither a sequence nor a mapping of ints.
            ValueError: a priority is outside 0..7.
            TorrentError: the metadata is not known yet (the file count is not: give
                ``TorrentOptions.file_priorities`` or use :meth:`set_files`), the sequence
                does not have one priority per file, a mapping names a file the torrent does
                not have (nothing changes), or the torrent failed, was closed or removed.
        """
        # Checked whole before anything changes. A mapping: {index: priority} for a few.
        changes: dict[int, int] | None = None
        if isinstance(priorities, Mapping):
            changes = dict(priorities)
            if any(type(index) is not int for index in changes):
                raise TypeError(f"file priorities map file indices (ints), not {priorities!r}")
            check_file_priorities(list(changes.values()))
            wanted: tuple[int, ...] = ()
        else:
            wanted = check_file_priorities(priorities)
        self._check_alive("set file priorities")
        info = self.info
        if info is None:
            raise TorrentError(
                f"{self._name}: no file priorities before the metadata is known (the file"
                " count is not)"
            )
        if changes is not None:
            _check_selection(info, frozenset(changes), prefix=f"{self._name}: ")
            current = list(_per_file(self._file_choice, info))
            for index, priority in changes.items():
                current[index] = priority
            wanted = tuple(current)
        else:
            _check_choice(info, wanted, prefix=f"{self._name}: ")
        self._choose_files(_per_file(wanted, info))  # a pad file's priority stays 0

    def set_files(self, selection: frozenset[int] | None) -> None:
        """Download only the files at these indices (``None``: every file): libtorrent's
        ``prioritize_files``, as select or deselect (priority 4 or 0; for other priorities,
        :meth:`set_file_priorities`).

        Indices count as the torrent lists its files, pad files included. The brain hears
        it at once: requests for pieces no longer wanted are cancelled, peers that now have
        something we want are told we are interested. :meth:`status` (``total``, ``done``)
        and the ``left`` trackers hear follow. A torrent done with its old selection that
        now wants more goes back to ``DOWNLOADING``: :attr:`completed` is replaced by a new
        event (unset; one that was set stays set), peers hear we are no longer upload-only,
        the web seeds start again. One that wants less may become complete (``SEEDING``).
        Pieces a deadline raised (:meth:`set_piece_deadline`) take their files' priority
        again, and pieces no longer wanted lose their deadlines, as in libtorrent. The blocks
        received of a piece no longer wanted are dropped, also those still arriving or
        waiting for the disk (a piece part way in memory holds a share of the disk's bound
        every torrent shares): selected again, it is fetched whole (libtorrent keeps them on
        disk).

        Remembered in the resume data (``.bip/HASH.selection``): a later run with
        ``TorrentOptions.files`` left ``None`` selects these files again. Before a magnet
        link's metadata is known the selection is kept, and checked then (an index outside
        the torrent then fails it, as ``TorrentOptions.files`` does).

        Raises:
            TypeError: ``selection`` is not a set of ints, nor ``None``.
            TorrentError: an index is not a file of the torrent (nothing changes), or the
                torrent failed, was closed or removed.
        """
        if selection is not None:
            if not isinstance(selection, frozenset | set) or any(
                type(index) is not int for index in selection
            ):
                raise TypeError(
                    f"a file selection is a frozenset of ints or None, not {selection!r}"
                )
            selection = frozenset(selection)
        self._check_alive("select files")
        if self.info is not None and selection is not None:
            _check_selection(self.info, selection, prefix=f"{self._name}: ")
        self._choose_files(selection)

    def _choose_files(self, choice: _FileChoice) -> None:
        """The user chose the files (checked): remembered, saved soon, and the brain told."""
        self._file_choice = choice
        self._selection_set = self._selection_dirty = True
        self._raised.clear()
        self._check_raised.clear()
        self._resume_dirty.set()
        self._priorities_changed()

    def _priorities_changed(self) -> None:
        """The selection or a raised piece changed: the wanted pieces, sizes and the brain's
        priorities follow (once the brain exists; it is made with them otherwise)."""
        swarm = self.swarm
        wanted_before = self._wanted
        if swarm is None:
            if self._geometry is not None:  # checking: the status shows the new sizes now
                # Kept, as with a brain: a deadline set meanwhile (_raise_piece) reads them.
                self._priorities = self._piece_priorities()
                # A move's check keeps the pieces in memory: those no longer wanted go now
                # (the brain made after the check starts afresh).
                for piece in wanted_before - self._wanted:
                    self._drop_unwanted(None, piece)
                    self._blocks.discard(piece)  # the old brain's: none to give back to
            return
        priorities = self._priorities = self._piece_priorities()
        everything = [DEFAULT_FILE_PRIORITY] * swarm.brain.geometry.num_pieces
        now = trio.current_time()
        swarm.feed(
            PrioritiesChanged(piece_priorities=dict(enumerate(priorities or everything))), now
        )
        if priorities is not None:
            # As libtorrent's prioritize_files: a piece no longer wanted loses its deadline.
            for piece in [p for p in swarm.brain.deadlines() if not priorities[p]]:
                swarm.feed(PieceDeadlineCleared(piece), now)
        for piece in wanted_before - self._wanted:
            self._drop_unwanted(swarm, piece)
            # Its blocks set aside held their share of the blocks set aside, and the piece
            # its place in the disk's line for room, for a piece nobody wants: given back
            # (the brain drops them anyway), their peers not paused (they did nothing wrong).
            for swarm_of, peer, message in self._blocks.discard(piece):
                self._give_back(swarm_of, peer, message)
        self._recount_done()
        self._update_completion()

    def _drop_unwanted(self, swarm: Swarm | None, piece: int) -> None:
        """Drop the blocks the disk holds of ``piece`` if it is not wanted (any more): each
        piece still arriving holds a piece-sized buffer of the disk's bound, shared by every
        torrent of the session, and nothing would complete this one, so that a few such
        pieces would stall every download. The brain (``None`` while checking: none) forgets
        its blocks too (as for a piece the disk discarded), so that it asks for them all
        again should the piece be wanted again."""
        handle = self.handle
        if piece in self._wanted or handle is None:
            return
        try:
            dropped = self._disk.discard_piece(handle, piece)
        except TorrentStateError:  # gone from the disk (removed, closing): nothing held
            return
        if dropped and swarm is not None:
            swarm.feed(BrainPieceDiscarded(piece), trio.current_time())

    def _recount_done(self) -> None:
        """Count ``done`` afresh: the data bytes of the wanted pieces the brain has (after a
        new selection, or with a new brain; a verified or lost piece adjusts it)."""
        swarm = self.swarm
        assert swarm is not None
        brain = swarm.brain
        self._done = sum(
            brain.geometry.piece_data_size(piece)
            for piece in self._wanted
            if brain.has_piece(piece)
        )

    def force_recheck(self) -> None:
        """Hash every piece on disk again (libtorrent's ``force_recheck``), in the background.

        As libtorrent: the peers are disconnected (:data:`REASON_RECHECK`), the sources and
        web seeds stop and nothing is dialled while bip_disk checks (phase ``CHECKING``,
        :attr:`TorrentStatus.checked` its progress); then the torrent goes on with what the
        check found (``DOWNLOADING`` or ``SEEDING``), joining its swarm again unless paused.
        Piece deadlines are kept. During a check already under way (``CHECKING``) it does
        nothing: that check decides. As libtorrent's, the torrent forgets it was complete:
        :attr:`completed` and :attr:`seeded` are unset (new events) until the check says
        what is there, so :meth:`wait_complete` waits for its result. An auto-managed
        torrent's check waits for the queue's leave (``ClientConfig.active_checking``) and,
        paused, for a resume, as libtorrent's does; one that ran keeps its slot as a
        download or a seed while its check runs (not while it waits for its turn).

        Raises:
            TorrentError: the metadata is not known yet (nothing to check), the storage is
                being moved, or the torrent failed, was closed or removed.
        """
        self._check_alive("recheck")
        if self._phase is TorrentPhase.CHECKING:
            return
        if self.handle is None or self.swarm is None or self._nursery is None:
            raise TorrentError(f"{self._name}: nothing to recheck before the metadata is known")
        if self._moving:
            raise TorrentError(f"{self._name}: cannot recheck while its storage moves")
        swarm = self.swarm
        # From now on the torrent checks: no brain until the check is done.
        self._pending_deadlines = dict(swarm.brain.deadlines())
        self._keep_slot()
        self._enter(TorrentPhase.CHECKING)
        self._hold(_HOLD_RECHECK, REASON_RECHECK)
        self.swarm = None
        self._forget_completion()
        # As libtorrent's force_recheck clears what the torrent has: nothing counts as done
        # until the new brain (made from the check's result) counts it afresh, so that a
        # status meanwhile (the check may wait for its turn, or a resume) is not complete.
        self._done = 0
        self._blocks.clear()  # asked by the old brain: the new one asks again
        self._hold_for_decision()  # its check waits for its turn (_recheck)
        self._nursery.start_soon(self._recheck)

    def _forget_completion(self) -> None:
        """A check begins (a recheck, a move's check of kept files): as libtorrent's
        ``force_recheck`` forgets ``have_all``, the torrent is neither complete nor a seed
        until the check says so (:meth:`_update_completion`, once the brain is made
        again), so that :meth:`wait_complete` waits for its result. New unset events take
        the set ones' places (waiters that woke stay woken)."""
        if self.completed.is_set():
            self.completed = trio.Event()
        if self.seeded.is_set():
            self.seeded = trio.Event()
        self._sync_upload_only()  # no peer now: only what the next ones will be told

    def _keep_slot(self) -> None:
        """About to check again: a running auto-managed torrent keeps its slot (its kind
        now) while its check runs, until it ends, so that the queue starts no other in its
        place only to queue that one again when the check ends (the queue counts it only
        once the check is let in: see :attr:`QueuedTorrent.keeps`)."""
        running = self._has_queue and not self.halted
        self._check_keeps = self._queue_kind() if running else None
        if self._check_keeps not in (QueueKind.DOWNLOADING, QueueKind.SEEDING):
            self._check_keeps = None

    async def _recheck(self) -> None:
        handle = self.handle
        assert handle is not None
        if self._store is not None:
            # As libtorrent: the torrent has no resume data from now on, so a run cut short
            # during the check checks everything again.
            async with self._save_lock:
                await self._store.forget_resume()
        await self._check_turn()
        self._disk_checking = True
        try:
            await self._disk.recheck(handle)
        except TorrentStateError as error:
            self._fail(f"recheck: {error}")
            return
        await self._finish_check(handle)

    async def _finish_check(self, handle: TorrentHandle) -> None:
        """Wait for the disk's check of ``handle`` (a recheck, or the pieces of the files a
        move kept), then go on with what it found: a new brain, back to the swarm."""
        try:
            state = await self._disk.wait_checked(handle)
        except TorrentStateError as error:
            self._fail(f"recheck: {error}")
            return
        if state is TorrentState.ERROR:
            self._fail(self._disk.status(handle).reason or "checking the data failed")
            return
        if state is not TorrentState.READY:
            # Given up (the disk manager closes: CHECKING still), or the torrent left the
            # disk: what the disk has is not a check's result, and no brain is made from it.
            # The torrent stays out of its swarm, checking, until it is closed.
            logger.debug("%s: check not finished (%s)", self._name, state.value)
            return
        self._end_check()
        self._make_swarm(handle)
        # Held until the queue decides, as after the first check: it joins its swarm again
        # only if there is room for it as what it is now.
        self._hold_for_decision()
        self._release(_HOLD_RECHECK)
        self._resume_dirty.set()

    async def move_storage(
        self, save_dir: Path, *, flags: MoveFlags = MoveFlags.ALWAYS_REPLACE_FILES
    ) -> None:
        """Move the torrent's files (and its resume files) to ``save_dir``: libtorrent's
        ``move_storage``; returns once moved.

        bip_disk copies the files to a new storage made as at the start
        (``TorrentOptions.storage``, else a :class:`~bip_disk.NativeFileSystem`) rooted at
        ``save_dir``, switches the torrent to it, and deletes the old files; reads and
        writes wait meanwhile, peers stay connected, verified pieces stay verified. The
        ``.bip/HASH.*`` files move too, and the resume data is saved again there (the files'
        times changed). :attr:`options` ``.save_dir`` follows. Before a magnet link's
        metadata is known only the save directory (and the resume files) change.

        ``flags`` (libtorrent's ``move_flags_t``) says what happens to the torrent's files
        that already exist in ``save_dir`` (bip_disk's :class:`~bip_disk.ExistingFiles`):

        - :attr:`MoveFlags.ALWAYS_REPLACE_FILES` (the default): replaced by the torrent's;
        - :attr:`MoveFlags.FAIL_IF_EXIST`: if any exists, :class:`TorrentError` is raised
          before anything is copied, or as soon as one appears during the copy (it is
          never replaced; the torrent stays where it was, a partial copy may be left);
        - :attr:`MoveFlags.DONT_REPLACE`: they are kept, and used: neither copied over nor
          written, while the torrent's own copies of them stay in the old directory (as
          libtorrent's); the others move. Then, as after :meth:`force_recheck`, the torrent
          leaves its swarm (phase ``CHECKING``, peers disconnected with
          :data:`REASON_RECHECK`, :attr:`completed` and :attr:`seeded` unset, nothing
          counted as ``done`` until the check ends) while bip_disk
          hashes the pieces the kept files hold (the others stay verified), in the
          background after this returns, and goes on with what it found. With no file in
          the way, it is the plain move.

        Moving to the directory the torrent is in already changes nothing, whatever the
        flags. Once bip_disk has switched the torrent to the new storage the move is done:
        a cancellation then still moves the resume files (a few small files) before it
        strikes, and the check of kept files runs on.

        Raises:
            TypeError: ``flags`` is not a :class:`MoveFlags`.
            TorrentError: the data is being checked or already moving; a file is in the way
                (``FAIL_IF_EXIST``); copying failed (the torrent stays where it was, a
                partial copy may be left); or the torrent failed, was closed or removed
                (also during the move).
        """
        if not isinstance(flags, MoveFlags):
            raise TypeError(f"flags must be a MoveFlags, not {flags!r}")
        self._check_alive("move its storage")
        save_dir = Path(save_dir)
        if self._moving or self._phase is TorrentPhase.CHECKING:
            raise TorrentError(f"{self._name}: cannot move while {self._phase.value}")
        self._moving = True
        try:
            await self._move(save_dir, flags)
        finally:
            self._moving = False

    async def _move(self, save_dir: Path, flags: MoveFlags) -> None:
        handle = self.handle
        checking = False
        if handle is not None:
            checking = await self._move_files(handle, save_dir, flags)
        self.options = dataclasses.replace(self.options, save_dir=save_dir)
        if self._store is None:
            return
        # Shielded: the data moved, and its resume files must follow it even when the
        # caller gives up now (a few small files).
        with trio.CancelScope(shield=True):
            async with self._save_lock:
                if self._removed:  # during the move: its resume files are gone for good
                    raise TorrentError(f"{self._name}: the torrent was removed while moving")
                store, self._store = self._store, self._store.moved_to(save_dir)
                try:
                    await self._store.take_files_of(store)
                except OSError as error:
                    logger.warning("%s: resume files not moved: %s", self._name, error)
                    self._selection_dirty = self._selection_set
                    self._saved_state = None
                if checking:
                    # As for a recheck: a run cut short during the check checks everything.
                    await self._store.forget_resume()
        if not self._stopped.is_set():
            try:
                await self._save_resume(sync=False)  # the files' times changed
            except trio.Cancelled:
                self._resume_dirty.set()  # the caller gave up: saved soon all the same
                raise

    async def _move_files(self, handle: TorrentHandle, save_dir: Path, flags: MoveFlags) -> bool:
        """bip_disk's move of the files to a new storage in ``save_dir``. Returns whether it
        kept files already there, whose pieces the disk now checks (the torrent then checks
        too, out of its swarm, until the disk is done).

        Raises:
            TorrentError: the move failed, the torrent's top directory or file in
                ``save_dir`` would be the ``.bip`` folder there (:func:`check_storage_place`),
                or the torrent was closed or removed meanwhile (the torrent stays where it
                was).
        """
        make = self.options.storage
        if make is None and self.info is not None:  # as where the storage first opened
            await trio.to_thread.run_sync(check_storage_place, self.info, save_dir)
        try:
            filesystem = self._make_filesystem(save_dir)
        except (StorageError, OSError) as error:
            raise TorrentError(f"{self._name}: cannot move to {save_dir}: {error}") from None
        try:
            kept = await self._disk.move_storage(handle, filesystem, existing=flags.existing)
        except BaseException as error:  # not moved: the torrent stays on its storage
            filesystem.close()
            if not isinstance(error, TorrentStateError | StorageError | OSError):
                raise
            if self._stopped.is_set() and isinstance(error, TorrentStateError):
                gone = "removed" if self._removed else "closed"
                raise TorrentError(f"{self._name}: the torrent was {gone} while moving") from None
            raise TorrentError(f"{self._name}: cannot move to {save_dir}: {error}") from None
        # Moved, whatever comes next: the torrent's files are in ``filesystem`` now.
        old, self._filesystem = self._filesystem, filesystem
        if old is not None:
            old.close()
        if self._stopped.is_set():
            # Closed, failed or removed while the disk finished the move: close() may have
            # closed the old storage already, and would not close this one (closing twice
            # is harmless).
            filesystem.close()
            if self._removed:
                raise TorrentError(f"{self._name}: the torrent was removed while moving")
            return False
        if not kept:
            return False
        # As after force_recheck: no brain, out of the swarm, until the disk's check ends
        # (_finish_check, in the torrent's nursery: a cancelled caller cannot stop it).
        swarm = self.swarm
        if swarm is not None:
            self._pending_deadlines = dict(swarm.brain.deadlines())
        # The disk checks at once (part of the move, not queued): the slot is kept all the
        # same, for the same reason as for a recheck.
        self._keep_slot()
        self._disk_checking = True
        self._enter(TorrentPhase.CHECKING)
        self._hold(_HOLD_RECHECK, REASON_RECHECK)
        self.swarm = None
        self._forget_completion()
        # As after force_recheck: the pieces of the kept files are not known to be had
        # until the check ends, so nothing counts as done (the new brain counts afresh).
        self._done = 0
        self._blocks.clear()  # asked by the old brain: the new one asks again
        assert self._nursery is not None  # the storage is open: run() is running
        self._nursery.start_soon(self._finish_check, handle)
        logger.debug(
            "%s: kept %d file(s) found in %s; checking their pieces",
            self._name,
            len(kept),
            save_dir,
        )
        return True

    # -- piece order ------------------------------------------------------------------------

    @property
    def sequential(self) -> bool:
        """Whether pieces are fetched in index order (see :meth:`set_sequential`)."""
        return self._sequential

    def set_sequential(self, enabled: bool) -> None:
        """Fetch pieces in index order (``True``) or rarest first (``False``, the default).

        libtorrent's ``set_sequential_download``, aria2's ``--stream-piece-selector=inorder``:
        for a player or a previewer reading the files front to back. It costs the swarm:
        rarity is ignored, so we hold the same pieces as every other sequential peer and
        have less to trade; rarest first keeps rare pieces alive. Priorities still come
        first (lowest index first within each priority), files not selected are not
        fetched (but for pieces given a deadline), and pieces with a deadline come before
        both orders.

        Switchable at any time, also before a magnet link's metadata arrives (remembered
        and applied when the download starts). Requests already sent stay; the order
        applies to the next ones.

        Raises:
            TorrentError: the torrent failed, or was closed or removed.
        """
        enabled = bool(enabled)
        self._check_alive("change its piece order")
        changed = enabled != self._sequential
        self._sequential = enabled
        if changed and self.swarm is not None:
            # The brain keeps the deadlines across the switch.
            self.swarm.feed(StrategyChanged(self._order()), trio.current_time())

    def _order(self) -> Strategy:
        return Sequential() if self._sequential else RarestFirst()

    @property
    def _deadlines(self) -> Mapping[int, float]:
        """The pending piece deadlines (the brain's, once it exists)."""
        if self.swarm is not None:
            return self.swarm.brain.deadlines()
        return self._pending_deadlines

    def set_piece_deadline(self, piece: int, seconds_from_now: float) -> None:
        """Ask for ``piece`` within ``seconds_from_now`` (0: as soon as possible).

        As libtorrent's ``set_piece_deadline``: pieces with a deadline are fetched before any
        other, earliest deadline first, from peers fast enough to deliver in time (or the
        fastest there is), and a block that its peer will not deliver in time is asked of a
        faster one as well. A new deadline for the same piece replaces the old one; a piece
        that passes its hash check forgets its deadline. A deadline for a piece we already
        have is ignored, its priority left as it is. A piece of a file not selected is
        raised to the lowest priority (1) so that it is fetched, as libtorrent does: that
        piece only, not its file; it counts in ``total`` (and a complete torrent goes back
        to ``DOWNLOADING`` for it). Clearing the deadline does not lower it again
        (libtorrent's neither); a new :meth:`set_files` does, and so does the check's end
        for a piece raised while the torrent checked that the check finds on disk (bip's
        rule: nothing can tell meanwhile that it is had), deadline cleared or not.

        Raises:
            TorrentError: the metadata is not known yet (a magnet link: the piece count is
                unknown), ``piece`` is not a piece of the torrent, or the torrent failed,
                was closed or removed.
            ValueError: ``seconds_from_now`` is negative or not finite.
        """
        self._check_alive("set a piece deadline")
        self._check_piece(piece)
        if not (math.isfinite(seconds_from_now) and seconds_from_now >= 0):
            raise ValueError(f"a deadline is seconds from now, >= 0; not {seconds_from_now!r}")
        if self.swarm is not None and self.swarm.brain.has_piece(piece):
            return  # met already: neither a deadline nor a raise (libtorrent's neither)
        now = trio.current_time()
        when = now + seconds_from_now
        self._raise_piece(piece)
        if self.swarm is None:
            # Pieces found on disk drop out when the brain is made.
            self._pending_deadlines[piece] = when
        else:
            # The brain ignores a piece it has, and asks the peers that have it at once.
            self.swarm.feed(PieceDeadlineSet(piece, when), now)

    def _raise_piece(self, piece: int) -> None:
        """A deadline for a piece not wanted (its files at priority 0): wanted from now on at
        the lowest priority, before the deadline reaches the brain."""
        if self._file_choice is None or piece in self._raised:
            return
        priorities = self._priorities
        if priorities is not None and priorities[piece]:
            return  # selected already
        self._raised.add(piece)
        if self.swarm is None:
            self._check_raised.add(piece)
        self._priorities_changed()

    def clear_piece_deadline(self, piece: int) -> None:
        """Forget the deadline of ``piece`` (libtorrent's ``reset_piece_deadline``): it is
        fetched in the usual order again. No deadline: nothing happens.

        Raises:
            TorrentError: the metadata is not known yet, ``piece`` is not a piece of the
                torrent, or the torrent failed, was closed or removed.
        """
        self._check_alive("clear a piece deadline")
        self._check_piece(piece)
        if self.swarm is None:
            self._pending_deadlines.pop(piece, None)
        else:
            self.swarm.feed(PieceDeadlineCleared(piece), trio.current_time())

    def clear_piece_deadlines(self) -> None:
        """Forget every piece deadline (libtorrent's ``clear_piece_deadlines``). Allowed at
        any time the torrent runs: before the metadata there are none.

        Raises:
            TorrentError: the torrent failed, or was closed or removed.
        """
        self._check_alive("clear its piece deadlines")
        if self.swarm is None:
            self._pending_deadlines.clear()
        else:
            self.swarm.feed(PieceDeadlinesCleared(), trio.current_time())

    def _check_piece(self, piece: int) -> None:
        info = self.info
        if info is None:
            raise TorrentError(
                f"{self._name}: no piece deadline before the metadata is known (the piece"
                " count is not)"
            )
        if type(piece) is not int or not 0 <= piece < info.num_pieces:
            raise TorrentError(
                f"{self._name}: no piece {piece!r}: the torrent has {info.num_pieces} pieces"
                f" (0..{info.num_pieces - 1})"
            )

    # -- the torrent's life -----------------------------------------------------------------

    async def run(self) -> None:
        """Fetch metadata, check the storage, then download and seed until cancelled."""
        self._run_began = True
        try:
            if self._stopped.is_set():
                return  # closed or removed before it began: nothing to open
            # The catch-all outside the scope: a bug raised while the torrent is cancelled
            # (its removal, close or failure) comes grouped with the Cancelled that only
            # the scope takes out, and would otherwise reach the session's nursery.
            with self._contained(), self._scope:
                await self._run()
        finally:
            self._storage_settled.set()  # however it ended (set already once opened)

    @contextlib.contextmanager
    def _contained(self) -> Iterator[None]:
        """Internal (:meth:`run`, and the session's routing of the disk's events): a bug
        raised in the block is this torrent's (:meth:`unexpected`). Only
        :class:`Exception`: a cancellation or a ``KeyboardInterrupt`` goes on up."""
        try:
            yield
        except Exception as error:
            self.unexpected(error)

    def unexpected(self, error: Exception) -> None:
        """Internal (:meth:`_contained`, and the session's tasks around each call into this
        torrent: its tick, its peers' events, as a plain ``try``, cheaper than a context
        manager there): a bug (ours, or a storage factory's) fails this torrent, never the
        session whose task met it, as libtorrent puts a torrent in its error state and goes
        on. The first is logged with its traceback, also when the torrent had failed for
        another reason or was being removed or closed."""
        if self._bug_met:
            # The session still ticks a failed torrent: the same bug again, every tick, is
            # logged (with its traceback) once.
            logger.debug("%s: unexpected error again: %r", self._name, error)
            return
        self._bug_met = True
        logger.error("%s: unexpected error", self._name, exc_info=error)
        if self._phase is not TorrentPhase.FAILED and not self._removed:
            try:
                self._fail(f"unexpected error: {_first_leaf(error)!r}")
            except Exception:  # a bug in failing it too: still this torrent's alone
                logger.exception("%s: failing it after that error failed too", self._name)
                self._scope.cancel()

    async def _run(self) -> None:
        """:meth:`run`'s work, in its cancel scope."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_blocks)
            try:
                await self._load_peers()
                user = UserPeers(await self._user_peers(), interval=self._config.redial_interval)
                nursery.start_soon(self._run_sources, [user, *self._sources])
                try:
                    if self.info is None:
                        await self._fetch_metadata()
                    else:
                        # Served (or refused as private) since __init__ already.
                        await self._serve_layers(self.info)
                    await self._load_selection()
                    await self._open_storage()
                except TorrentError as error:
                    self._fail(str(error))
                    nursery.cancel_scope.cancel()
                    return
            finally:
                # Opened, failed or cancelled: a removal or close waiting in _settled reads
                # the handle and the storage from now on (the rest of the run opens none).
                self._storage_settled.set()
            self._start_web_seeds()
            nursery.start_soon(self._save_resume_loop)
            assert self.handle is not None
            nursery.start_soon(self._uploader.run, self.handle)

    async def _run_sources(self, sources: list[PeerSource]) -> None:
        """Run the discovery sources while no hold is on: a pause cancels them (trackers hear
        ``stopped``), a resume runs them again (``started``)."""
        while True:
            await self._unheld.wait()
            with self._while_unheld():
                async with trio.open_nursery() as nursery:
                    for source in sources:
                        nursery.start_soon(source.run, self, self._peer_sink)
                await trio.sleep_forever()  # every source ended: nothing to do until a hold

    async def _load_selection(self) -> None:
        """The files chosen by :meth:`set_files` or :meth:`set_file_priorities` in an earlier
        run, unless the options choose files or the user did since (those win). Once the
        metadata is known: a record that does not fit the torrent's files is not ours, and
        is ignored."""
        options = self.options
        if self._store is None or options.files is not None:
            return
        if options.file_priorities is not None:
            return
        saved = await self._store.load_selection()
        if saved is None or self._selection_set:
            return
        choice = saved.priorities if saved.priorities is not None else saved.files
        info = self.info
        assert info is not None
        try:
            _check_choice(info, choice)
        except TorrentError as error:
            logger.debug("%s: saved file choice ignored: %s", self._name, error)
            return
        self._file_choice = choice
        self._selection_set = True

    async def _load_peers(self) -> None:
        """The peers and bans saved by the last run: the bans are back, and the peers go to
        the torrent's list as the ``resume`` source (dialled at once, tracker or not)."""
        if self._store is None:
            return
        saved = await self._store.load_peers()
        for host in saved.banned:
            self._ban_host(host)
        if saved.peers:
            logger.debug("%s: %d peers from the last run", self._name, len(saved.peers))
            self._peer_sink.discovered(self._info_hash, saved.peers, "resume")

    async def _save_peers(self) -> None:
        """Keep the best peers and the bans for the next run (with the resume data)."""
        if self._store is None or self.peer_list is None:
            return
        peers = self.peer_list.best(MAX_SAVED_PEERS)
        try:
            await self._store.save_peers(peers, self._banned)
        except OSError as error:
            logger.warning("%s: cannot save its peers: %s", self._name, error)

    async def _user_peers(self) -> tuple[PeerAddress, ...]:
        """The ``--peer`` addresses, and a magnet link's ``x.pe`` (names resolved here)."""
        peers = list(self.options.peers)
        if self._magnet is not None and self._magnet.peers:
            try:
                peers += await resolve_peers(list(self._magnet.peers))
            except SourceError as error:
                logger.warning("%s: x.pe: %s", self._name, error)
        return tuple(dict.fromkeys(peers))

    def _fail(self, reason: str) -> None:
        """Stop the torrent for good: its tasks, its peers, its place in the handshaker."""
        if self._error is None:
            self._error = reason
        if self._disk_checking:
            self._end_check()  # a check that failed frees its slot too
        self._enter(TorrentPhase.FAILED)
        self._stopped.set()
        self._scope.cancel()
        self._stop_serving()
        self._leave_swarm(REASON_STOPPED)
        logger.debug("%s failed: %s", self._name, reason)  # the owner reports it

    def _stop_serving(self) -> None:
        """A failed or closed torrent answers no peer's request for its piece layers
        (BEP 52) nor its info dictionary (BEP 9) any more. A private torrent's dictionary
        is never served: the exchange goes on marking it private (no ``ut_metadata`` in
        our handshake, BEP 27) until its removal forgets it."""
        self._layers.stop_serving(self._info_hash)
        if not self.private:
            self._metadata.stop_serving(self._info_hash)

    def _begin_close(self) -> None:
        """Internal (the session's close, which then closes its torrents one by one, and
        :meth:`close`): refuse every control from now on (:class:`TorrentError`), so that
        none restarts what the close is about to stop (a resume's trackers, a move, a
        recheck) while the torrent waits for its turn, and serve nothing more. Nor is any
        block written from now on (:meth:`_store_block`): every torrent of a closing
        session stops writing at once, and its last resume save need not wait long."""
        self._closing = True
        self._stop_serving()

    async def _settled(self) -> None:
        """Internal (a removal or close, shielded, once the torrent's tasks are cancelled):
        wait until :meth:`run` is done opening the storage, so that the handle read next is
        the last. Bounded: a cancelled run has only thread work left there (a piece layers
        check in bip_disk's ``add_torrent``, a stat, a resume file read), which no
        cancellation stops, and after which an add under way still hands its torrent over.
        A run not begun yet opens nothing (it sees the torrent stopped)."""
        if self._run_began:
            await self._storage_settled.wait()

    async def close(self) -> None:
        """Stop its tasks, save the resume data one last time (synced), close the files."""
        self._begin_close()
        self._scope.cancel()
        self._stopped.set()
        with trio.CancelScope(shield=True):
            await self._settled()
        if self.handle is not None:
            self._pieces()  # the count the status shows from now on
            with trio.CancelScope(shield=True):
                await self._settle_resume(await self._save_resume(sync=True))
                with contextlib.suppress(TorrentStateError):
                    await self._disk.remove_torrent(self.handle)
        else:
            # A magnet link whose metadata never came: its peers (and a selection made
            # meanwhile, and a pause) are still worth keeping.
            with trio.CancelScope(shield=True):
                await self._save_resume(sync=True)
        if self._filesystem is not None:
            self._filesystem.close()

    async def _settle_resume(self, data: bytes | None) -> None:
        """At a clean stop, once the torrent writes no more (:meth:`_begin_close`): when the
        record just saved (``data``; ``None`` when none was) would have the next start hash
        pieces because files were written within the racy window before it (a write right
        after could have left their mtime unchanged), wait out the rest of the window and
        save again, so that the restart trusts the files as they are: libtorrent never
        hashes again after a clean stop. Bounded: :data:`_SETTLE_SAVES` saves at most, each
        after the window at most (the disk may still write pieces it had queued meanwhile)."""
        info, filesystem = self.info, self._filesystem
        if info is None or filesystem is None:
            return
        for _ in range(_SETTLE_SAVES):
            if data is None or self._phase is TorrentPhase.CHECKING:
                return  # no record made (no resume data, a fault, a check under way)
            try:
                record = ResumeData.from_bytes(data)
            except DiskError as error:  # as saved
                logger.debug("%s: resume data not settled: %s", self._name, error)
                return
            # Checked first, from the record alone: only a piece the record lacks is hashed
            # for a racy file (a seed's never is), and stat'ing every file (pieces_to_hash)
            # is the close's cost for a torrent of many files.
            racy_until = record.racy_until_ns()
            if racy_until is None or len(record.have) >= info.num_pieces:
                return
            try:
                if not await self._disk.pieces_to_hash(info, filesystem, resume_data=data):
                    return
            except DiskError as error:  # the disk closing, a stat's fault: as saved
                logger.debug("%s: resume data not settled: %s", self._name, error)
                return
            wait = min(racy_until - time.time_ns(), RACY_WINDOW_NS)
            if wait > 0:
                await trio.sleep(wait / 1e9)
            data = await self._save_resume(sync=True)

    async def _remove(self, *, delete_data: bool) -> None:
        """Internal (:meth:`bip._client.Session.remove_torrent`): stop for good, disconnect
        the peers, leave the handshaker and the disk (deleting the files with
        ``delete_data``), and delete the resume files. The session forgot it already."""
        self._removed = True
        self._scope.cancel()
        self._stopped.set()
        self._layers.stop_serving(self._info_hash)
        self._metadata.stop_serving(self._info_hash)
        self._leave_swarm(REASON_REMOVED)
        self.peers.clear()
        problems: list[str] = []
        with trio.CancelScope(shield=True):
            # Before the lock, which the metadata's save in the run takes.
            await self._settled()
            # The lock: a save under way ends before its files are deleted, and none follows
            # (the torrent's tasks are cancelled).
            async with self._save_lock:
                try:
                    deleted = False
                    if self.handle is not None:
                        self._pieces()  # the count the status shows from now on
                        with contextlib.suppress(TorrentStateError):
                            await self._disk.remove_torrent(self.handle, delete_data=delete_data)
                            deleted = True
                    if delete_data and not deleted and self.info is not None:
                        # Never added to the disk (waiting for its check, failed before): its
                        # files are deleted all the same, as libtorrent deletes in every state.
                        problems = await self._delete_files(self.info)
                finally:
                    if self._filesystem is not None:
                        self._filesystem.close()
                    if self._store is not None:
                        await self._store.forget_all()
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise TorrentError(
                f"{self._name}: removed, but not all of its files were deleted from"
                f" {self.options.save_dir}: {'; '.join(problems[:3])}{more}"
            )
        logger.debug("%s removed%s", self._name, " with its data" if delete_data else "")

    def _make_filesystem(self, save_dir: Path) -> FileSystem:
        """The torrent's storage for ``save_dir``: ``options.storage``'s, else native files
        there (the caller checks the place first, where it must)."""
        make = self.options.storage
        return NativeFileSystem(save_dir) if make is None else make(save_dir)

    async def _delete_files(self, info: Info) -> list[str]:
        """Delete the files of a torrent the disk does not have (it never reached it, or
        knew it no more) with bip_disk's :meth:`~bip_disk.DiskManager.delete_files`,
        in the storage it opened, else in one made as ``_open_storage`` makes it (and
        closed here). Returns what could not be deleted, said (empty when everything was,
        or nothing was there)."""
        make = self.options.storage
        save_dir = self.options.save_dir
        made: FileSystem | None = None
        try:
            if make is None:
                # As _open_storage refuses it: never the files of a torrent whose top name
                # is the .bip folder under another name (its resume data would go).
                await trio.to_thread.run_sync(check_storage_place, info, save_dir)
            filesystem = self._filesystem
            if filesystem is None:
                filesystem = made = self._make_filesystem(save_dir)
            errors = await self._disk.delete_files(info, filesystem)
        except (TorrentError, DiskError, OSError) as error:
            return [str(error)]
        finally:
            if made is not None:
                made.close()
        return [str(error) for error in errors]

    async def _fetch_metadata(self) -> None:
        """Get the info dictionary, and a v2-only torrent's piece layers: saved by an earlier
        run, else from the peers (BEP 9, then BEP 52 hash requests)."""
        saved = None if self._store is None else await self._store.load_metadata()
        # Parsed in a thread, which a removal or a close does not cut short, and whose result
        # comes back with no checkpoint: cancelled meanwhile, this would register the
        # torrent again (session and handshaker) and serve its metadata after its removal.
        await trio.lowlevel.checkpoint_if_cancelled()
        if saved is not None:
            info, self._piece_layers = saved
            if self.options.storage is None:  # kept by a run that did not refuse it
                check_storage_name(info)
        else:
            info = await self._fetch_info()
            # Likewise: its parse and its save end in threads.
            await trio.lowlevel.checkpoint_if_cancelled()
        # Both name this torrent: load_metadata and _fetch_info check it (default storage).
        self.info = info
        self._name = info.name
        if info.info_hash != self._info_hash:
            # A hybrid torrent found by one of its hashes: take both swarms from now on. The
            # session first (it raises TorrentError when another torrent has the other
            # hash): nothing of the other hash is served nor registered here before.
            self._on_info_hash(self, info.info_hash)
            self._registered[info.info_hash] = None
            self._info_hash = info.info_hash
            if self._holds:  # paused meanwhile: the session registered it
                self._handshaker.unregister(info.info_hash)
        # Its flag as parsed (in a thread, for a fetched one): not decoded again here.
        self._metadata.serve(info.info_hash, info.to_bytes(), private=info.private)
        for peer in list(self.peers):
            self._settle_piece_count(peer)
        if must_fetch_layers(info, self._piece_layers):
            # The exchange serves the layers it fetched from then on: their trees are built
            # once, there, not hashed again here.
            self._piece_layers = await self._fetch_layers(info)
            await self._save_info(info)
            # Saved in a thread: a removal meanwhile must not see the torrent checking.
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await self._serve_layers(info)
        # Checking from now on: held until the queue decides, out of its view until the
        # disk says whether the check hashes anything (_open_storage); an auto-managed
        # torrent that ran to fetch the metadata keeps its slot as a download once its
        # check is let in, if it must wait for one.
        self._keep_slot()
        self._unqueued_check = True
        self._enter(TorrentPhase.CHECKING)
        self._hold_for_decision()

    async def _fetch_from_peers(
        self, fetch: Callable[[], Awaitable[_T]], failed: type[Exception], not_yet: str
    ) -> _T:
        """The first result of ``fetch`` (asking the connected peers), tried until one comes:
        not while a hold is on (no peers to ask), cut short by a hold (tried again once it
        ends), and again after a failure (``failed``, logged after ``not_yet``)."""
        while True:
            await self._unheld.wait()  # paused: no peers to ask
            with self._while_unheld():
                try:
                    return await fetch()
                except failed as error:
                    logger.info("%s: %s", not_yet, error)
            # Failed, or cut by a pause: again (once resumed).

    async def _fetch_info(self) -> Info:
        """The info dictionary from the peers (BEP 9), saved for the next run.

        Each attempt goes on from the pieces the earlier ones got (the exchange keeps them,
        through the peers' reconnections, until the torrent stops serving, or, paused, until
        64 other torrents' unfinished fetches are kept after it), so a dictionary slower to
        come than one ``metadata_timeout`` still comes."""
        raw = await self._fetch_from_peers(
            lambda: self._metadata.fetch(
                self._manager, self._info_hash, timeout=self._config.metadata_timeout
            ),
            MetadataFetchError,
            "metadata not found yet",
        )
        try:
            # Up to 4 MiB of someone else's making (150,000 tiny files: seconds of Python):
            # parsed off the event loop, so the session's other torrents go on.
            info = await trio.to_thread.run_sync(Info.from_bytes, raw)
        except MetainfoError as error:
            # It hashes to the info-hash, so it is the torrent: a torrent we cannot read.
            raise TorrentError(f"the torrent's metadata is not usable: {error}") from None
        if not names_same_torrent(self._info_hash, info.info_hash):
            # The bytes hash to every hash the magnet has (the fetcher checked), but a hash is
            # the dictionary's only if it has that version: a btmh magnet naming the SHA-256
            # of a v1-only dictionary. Not saved: the next run would refuse it and fetch again.
            version = "v2" if self._info_hash.v2 is not None and info.info_hash.v2 is None else "v1"
            raise TorrentError(
                f"the magnet's {version} hash names an info dictionary that is not {version}"
            )
        if self.options.storage is None:  # files at save_dir/<path>, as _open_storage checks
            # before it is kept: the next run would only refuse it again
            check_storage_name(info)
        await self._save_info(info)
        return info

    async def _fetch_layers(self, info: Info) -> dict[bytes, bytes]:
        """The piece layers of a v2-only torrent's files larger than one piece (BEP 52 hash
        requests), each checked against its file's pieces root by the exchange. Each attempt
        goes on from the chunks the earlier ones verified (kept by the exchange until the
        torrent stops serving).

        Raises:
            TorrentError: the layers fetched cannot be served: fetching them again would give
                the same ones (this torrent fails, the session's others go on).
        """

        async def fetch() -> dict[bytes, bytes]:
            try:
                return await self._layers.fetch(
                    self._manager, info, timeout=self._config.metadata_timeout
                )
            except PieceLayerServeError as error:
                # A PieceLayerFetchError, which _fetch_from_peers tries again: not this one
                # (its message says the layers fetched cannot be served, and why).
                raise TorrentError(str(error)) from None

        layers = await self._fetch_from_peers(
            fetch, PieceLayerFetchError, f"{self._name}: piece layers not found yet"
        )
        logger.debug("%s: fetched %d piece layers", self._name, len(layers))
        return dict(layers)

    async def _save_info(self, info: Info) -> None:
        """Keep the metadata (and the piece layers known) for the next run, if resuming."""
        # Under the lock, as every save: a move swaps the store and takes its files under it
        # (the store is read here, after), and a removal deletes them under it (a .torrent
        # saved after that would come back for good).
        async with self._save_lock:
            if self._store is None or self._removed:
                return
            try:
                await self._store.save_info(info, self._piece_layers)
            except OSError as error:
                logger.warning("cannot keep the metadata: %s", error)

    async def _serve_layers(self, info: Info) -> None:
        """Answer the peers' BEP 52 hash requests from our piece layers, once we have every
        one (a hybrid torrent from a magnet link has none, and rejects the requests).

        A large torrent's trees are built in a worker thread (two million pieces: seconds),
        so the session's other torrents go on meanwhile; a removal or close meanwhile stops
        serving, which drops them.

        Raises:
            TorrentError: the layers cannot be served (one of the wrong size for its file):
                this torrent fails, the session's others go on.
        """
        if info.is_v2 and not layers_missing(info, self._piece_layers):
            try:
                await self._layers.serve_async(info, self._piece_layers)
            except ValueError as error:
                # Metainfo and the resume store check every layer against its file, so this
                # is a torrent they let through by mistake: its fault, not the session's.
                raise TorrentError(
                    f"the torrent's piece layers cannot be served: {error}"
                ) from None
            # The build ends in a thread, which a removal or a close does not cut short: the
            # torrent must not go on (checking, opening its storage) after either.
            await trio.lowlevel.checkpoint_if_cancelled()

    def _piece_priorities(self) -> list[int] | None:
        """Each piece's priority from the files' and the raised pieces (``None``: every
        piece at the default), setting the wanted pieces and their size with it.

        Raises:
            TorrentError: the selection names a file the torrent does not have, or the
                priorities are not one per file.
        """
        info = self.info
        assert info is not None
        geometry = self._geometry  # set with the storage, before any caller runs
        assert geometry is not None
        choice = self._file_choice
        if choice is not None and choice is self._link_choice:
            choice = self._file_choice = _within_files(info, self._link_choice, self._name)
        if choice is None:
            priorities = None
        else:
            _check_choice(info, choice)
            # A piece takes the highest priority of its files (libtorrent's rule).
            priorities = geometry.piece_priorities(_per_file(choice, info))
            for piece in self._raised:
                if not priorities[piece]:
                    priorities[piece] = _DEADLINE_PRIORITY
        self._wanted = frozenset(
            range(geometry.num_pieces)
            if priorities is None
            else (p for p, priority in enumerate(priorities) if priority)
        )
        self._total = sum(geometry.piece_data_size(p) for p in self._wanted)
        return priorities

    async def _open_storage(self) -> None:
        """Add the torrent to the disk, check it, make the brain and join the peers."""
        info = self.info
        assert info is not None
        self._geometry = TorrentGeometry.from_info(info)
        self._piece_priorities()  # a bad selection fails before the storage opens
        make = self.options.storage
        if make is None:  # files at save_dir/<path> (a custom storage names them its own way)
            await trio.to_thread.run_sync(check_storage_place, info, self.options.save_dir)
        try:
            self._filesystem = self._make_filesystem(self.options.save_dir)
        except (StorageError, OSError) as error:  # as _move_files: this torrent's failure
            raise TorrentError(f"cannot open {self.options.save_dir}: {error}") from None
        resume = None if self._store is None else await self._store.load_resume()
        # Now checking. As libtorrent's checking_resume_data, the disk first says whether the
        # check will hash anything (files stat'ed, none read), out of the queue's view and
        # whether queued or paused: a session restarted with many torrents whose files are
        # as their resume data says gets through them at once, and so does a download with
        # no file yet. One that will hash (files changed since the resume data, as after an
        # unclean stop; no resume data and files there; resume data refused) checks only
        # when the queue lets it (ClientConfig.active_checking) and not while paused, as
        # libtorrent's fall back to checking_files.
        self._unqueued_check = True
        try:
            resume, hashes = await self._plan_check(self._filesystem, resume)
            if hashes:
                self._unqueued_check = False
                self._hold_for_decision()
                await self._check_turn()
            self._disk_checking = True
            handle = await self._add_to_disk(self._filesystem, resume)
        except (TorrentStateError, ResumeDataError, StorageError, OSError) as error:
            raise TorrentError(str(error)) from None
        self.handle = handle
        state = await self._disk.wait_checked(handle)
        # Failed meanwhile (a bug in one of its disk events during the check): the wait
        # ended at once all the same, and must not bring it back to DOWNLOADING.
        await trio.lowlevel.checkpoint_if_cancelled()
        if state is TorrentState.ERROR:
            raise TorrentError(self._disk.status(handle).reason or "checking the data failed")
        if state is not TorrentState.READY:
            # Given up as the disk manager closes (see _finish_check): no brain from a check
            # that did not end; the session is closing, and cancels this soon.
            logger.debug("%s: check not finished (%s)", self._name, state.value)
            await trio.sleep_forever()
        self._end_check()
        self._make_swarm(handle)
        # Downloading or seeding from now on: held until the queue says whether there is
        # room for it, before the sources hear the data is checked (no announce to take
        # back at once).
        self._hold_for_decision()
        self.ready.set()

    async def _plan_check(
        self, filesystem: FileSystem, resume: bytes | None
    ) -> tuple[bytes | None, int]:
        """The resume data to add the torrent with (``None`` if the disk refuses it: then
        everything is hashed), and how many pieces the disk's check of ``filesystem`` would
        hash now with it (:meth:`~bip_disk.DiskManager.pieces_to_hash`). A file that cannot
        be stat'ed counts as none to hash: the disk's check meets the same fault and fails
        the torrent, which need not wait for a slot first.

        Raises:
            TorrentStateError: the disk is closing.
        """
        info = self.info
        assert info is not None
        if resume is not None:
            try:
                return resume, await self._disk.pieces_to_hash(info, filesystem, resume_data=resume)
            except ResumeDataError as error:
                logger.warning("ignoring the resume data: %s", error)
            except StorageError as error:
                logger.debug("%s: cannot plan its check: %s", self._name, error)
                return resume, 0
        try:
            return None, await self._disk.pieces_to_hash(info, filesystem)
        except StorageError as error:
            logger.debug("%s: cannot plan its check: %s", self._name, error)
            return None, 0

    async def _add_to_disk(self, filesystem: FileSystem, resume: bytes | None) -> TorrentHandle:
        """Add the torrent stored in ``filesystem`` to the disk, which checks it in the
        background: only what ``resume`` (checked by :meth:`_plan_check`) does not vouch
        for is hashed.

        Raises:
            TorrentStateError: the disk refused it (closing, or the torrent is there).
            ResumeDataError: the disk refused ``resume`` (not after :meth:`_plan_check`
                took it: the same check of the same bytes).
        """
        info = self.info
        assert info is not None
        source: Metainfo | Info = self.metainfo if self.metainfo is not None else info
        return await self._disk.add_torrent(
            source, filesystem, resume_data=resume, piece_layers=self._piece_layers
        )

    def _end_check(self) -> None:
        """The disk's check is over (done, or failed): no slot of the queue's is taken or
        kept by it any more, and the session hears so (the next check may start) unless it
        hashed nothing (that took no slot: a session restarted with many torrents is not
        asked once per torrent)."""
        allotted = not self._unqueued_check
        self._disk_checking = False
        self._unqueued_check = False
        self._check_keeps = None
        if allotted and self._on_check_end is not None:
            self._on_check_end()

    def _make_swarm(self, handle: TorrentHandle) -> None:
        """The data is checked: make the brain with what is on disk and the priorities now
        (set_files may have been called during the check), and join the peers."""
        geometry = self._geometry
        assert geometry is not None
        have = self._disk.have(handle)
        # A deadline set meanwhile raised its piece, not knowing it was on disk: a deadline
        # for a piece we have is ignored, and so is its raise (set_piece_deadline's promise),
        # whether the deadline is still set or not. A raise made before the check stays.
        self._raised.difference_update(p for p in self._check_raised if p in have)
        self._check_raised.clear()
        priorities = self._priorities = self._piece_priorities()
        brain = SwarmBrain(
            geometry,
            rng=self._rng,
            have=have,
            selection=self._order(),
            piece_priorities=priorities,
            queueing=brain_queueing(),  # trust per host, kept across reconnects
        )
        self.swarm = Swarm(
            self._manager,
            brain,
            on_banned=self._ban,
            allowed_fast_set_size=self._config.allowed_fast_set_size,
        )
        self._recount_done()  # the brain has what is on disk
        self._unverified = geometry.bytes_left(have)
        now = trio.current_time()
        # Deadlines set meanwhile: the brain drops those of pieces found on disk (met), and
        # adds its Streaming layer only if some are left. No peer has joined yet.
        pending, self._pending_deadlines = self._pending_deadlines, {}
        for piece, when in pending.items():
            if priorities is None or priorities[piece]:  # set_files may have dropped it
                self.swarm.feed(PieceDeadlineSet(piece, when), now)
        self._enter(TorrentPhase.DOWNLOADING)  # or SEEDING, just below
        self._update_completion()
        for peer in list(self.peers):
            self.swarm.join(peer, now)

    def _check_complete(self) -> None:
        """A piece was verified: complete, or a seed, now? Either may come first (a piece
        outside the selection can be the last the torrent lacked)."""
        swarm = self.swarm
        if swarm is None:
            return
        brain = swarm.brain
        if (brain.is_complete and not self.completed.is_set()) or (
            brain.is_seed and not self.seeded.is_set()
        ):
            self._update_completion()

    def _update_completion(self) -> None:
        """``SEEDING`` once every wanted piece is here; back to ``DOWNLOADING`` when the
        wanted pieces grew past what is here (a new selection, a raised piece). Sets
        :attr:`seeded` once every piece is here, and replaces it when one is missing again."""
        swarm = self.swarm
        if swarm is None or self._phase in (TorrentPhase.FAILED, TorrentPhase.CHECKING):
            return
        complete = swarm.brain.is_complete
        self._enter(TorrentPhase.SEEDING if complete else TorrentPhase.DOWNLOADING)
        if complete and not self.completed.is_set():
            self.completed.set()
            self._resume_dirty.set()
            self._finish_web_seeds()
            self._sync_upload_only()
            for peer in list(self.peers):
                self._drop_if_redundant(peer)
        elif not complete and self.completed.is_set():
            # An Event is never cleared: waiters that woke stay woken, new ones wait anew.
            self.completed = trio.Event()
            self._resume_dirty.set()
            self._sync_upload_only()
            if not self._holds:
                self._restart_web_seeds(retry=False)
        if swarm.brain.is_seed:
            self.seeded.set()
        elif self.seeded.is_set():
            self.seeded = trio.Event()  # as completed: waiters that woke stay woken
        self._sync_revelation()  # super-seeding only while seeding

    @property
    def says_upload_only(self) -> bool:
        """Whether peers are told we only upload (BEP 21: ``upload_only`` in our BEP 10
        handshake, and its message when that changes): once complete, unless the
        super-seeding flag is set. As libtorrent: a super-seed poses as a peer with little,
        and a leecher drops a peer that says it only uploads and has nothing it wants
        (libtorrent's "uninteresting upload-only peer")."""
        return self.completed.is_set() and not self.super_seeding

    def _sync_upload_only(self) -> None:
        """BEP 21, as libtorrent: tell the peers that speak it whether we only upload, when
        that changed (:attr:`says_upload_only`). A peer that leaves too many control messages
        unwritten to take this one stopped reading: it is dropped, as for its haves."""
        upload_only = self.says_upload_only
        if upload_only == self._told_upload_only:
            return
        self._told_upload_only = upload_only
        for peer in list(self.peers):
            speaks = peer.connection.their_extension_ids.get(UPLOAD_ONLY_EXTENSION)
            if speaks and not self._manager.send_control(peer, UploadOnly(upload_only)):
                self._manager.remove_peer(peer, REASON_STALLED)

    def _drop_if_redundant(self, peer: Peer) -> None:
        """Close a connection between two peers that both only upload (libtorrent's
        ``close_redundant_connections``): neither wants anything of the other."""
        if not self.completed.is_set() or self._uploading_wanted():
            return
        connection = peer.connection
        if connection.peer_has_all or connection.peer_upload_only:
            self._manager.remove_peer(peer, REASON_REDUNDANT)

    def _uploading_wanted(self) -> bool:
        """Whether we still want pieces: a partial selection completes without every piece,
        and a peer with everything may still have what another selection wants. Not so when
        every piece is here."""
        return self.swarm is not None and not self.swarm.brain.is_seed

    def _ban(self, peer: Peer) -> None:
        # By host, as libtorrent bans: the same peer comes back from another port.
        self._ban_host(peer.address.normalized().host)

    def _ban_host(self, host: IPv4Address | IPv6Address) -> None:
        """Refuse ``host`` from now on, and tell the peer list at once (its entries not
        connected go, and it is never dialled again)."""
        # Bounded: each ban costs a peer some bad pieces, but many peers could still fill
        # memory. (The list bounds its own bans alike.)
        if len(self._banned) < MAX_BANNED_HOSTS:  # the peer list's bound too
            self._banned.add(host)
        if self.peer_list is not None:
            self.peer_list.ban(host)

    def refuses(self, address: PeerAddress) -> bool:
        """Whether a peer at ``address`` was banned for sending bad data."""
        return address.normalized().host in self._banned  # IPv4 in IPv6 form as IPv4

    # -- what the session routes here -------------------------------------------------------

    def _settle_piece_count(self, peer: Peer) -> bool:
        """Tell a peer added before the metadata was known its torrent's piece count.

        bip_peer keeps what such a peer said about its pieces until then, and checks it now:
        the manager drops a peer whose bitfield does not fit. Returns whether the peer is fine.
        """
        info = self.info
        if info is None or peer.connection.num_pieces is not None:
            return True
        try:
            return self._manager.set_num_pieces(peer, info.num_pieces)
        except ValueError as error:  # another count already: not this torrent's peer
            self._manager.remove_peer(peer, f"piece count: {error}")
            return False

    def peer_added(self, peer: Peer) -> None:
        """A connection of this torrent is up."""
        if self._stopped.is_set():
            self._manager.remove_peer(peer, REASON_STOPPED)
            return
        if self._holds:  # delivered just before the pause (or the queue's, or a recheck)
            held = self._holds & {_HOLD_PAUSED, _HOLD_QUEUED}
            self._manager.remove_peer(peer, REASON_PAUSED if held else REASON_RECHECK)
            return
        self.peers.add(peer)
        # Added while the metadata arrived: the session gave it no piece count.
        if not self._settle_piece_count(peer):
            return
        if self.swarm is not None:
            self.swarm.join(peer, trio.current_time())
            self._drop_if_redundant(peer)

    def peer_removed(self, peer: Peer) -> None:
        """A connection of this torrent is gone."""
        self.peers.discard(peer)
        if self.swarm is not None:
            self.swarm.leave(peer, trio.current_time())

    def peer_message(self, peer: Peer, message: object) -> None:
        """A message from one of this torrent's peers; never waits (a block goes to the
        torrent's writer: the session's other torrents go on while this one's disk is
        busy)."""
        swarm = self.swarm
        if swarm is None or peer not in swarm.joined:
            return
        if isinstance(message, Piece):
            self._queue_block(swarm, peer, message)
        elif isinstance(message, Request):
            self._request(peer, message)
        else:
            swarm.message(peer, message, trio.current_time())
            if isinstance(message, HaveAll | Bitfield | Have | UploadOnly | ExtendedHandshake):
                self._drop_if_redundant(peer)

    def _start_web_seeds(self) -> None:
        """Make the web seeds, join them to the brain and start their workers (not when the
        data is all here already: a web seed only ever gives; nor while paused)."""
        if self.completed.is_set():
            return  # made if the torrent wants more (set_files)
        self._make_web_seeds()
        if not self._holds:
            self._run_web_seeds()

    def _make_web_seeds(self) -> None:
        """The web seeds, once (the first time the torrent downloads)."""
        info = self.info
        if info is None or self._web_seeds_made:
            return
        self._web_seeds_made = True
        urls = self._web_seed_urls
        if len(urls) > MAX_WEB_SEEDS:
            logger.info(
                "%s: using the first %d of %d web seeds", self._name, MAX_WEB_SEEDS, len(urls)
            )
            urls = urls[:MAX_WEB_SEEDS]
        # One table of the files for all the web seeds, made at their first request (off the
        # event loop for a large torrent): each web seed holds its base URL only, and a
        # file's URL is made per request. The url-list is not in the info dictionary:
        # whoever hands out the torrent picks how many web seeds it has.
        files = WebSeedFiles(info)
        for url in urls:
            try:
                layout = web_seed_layout(url, files)
            except WebSeedUrlError as error:
                logger.info("%s: web seed skipped: %s", self._name, error)
                continue
            self.web_seeds.append(self._new_web_seed(layout))

    def _new_web_seed(self, layout: WebSeedLayout) -> WebSeed:
        info = self.info
        assert info is not None
        return WebSeed(
            layout,
            self._web_seed_client,
            deliver=self._web_block,
            feed=self._web_seed_input,
            piece_length=info.piece_length,
        )

    def _run_web_seeds(self) -> None:
        """Join the usable web seeds not joined yet to the brain, and start their workers."""
        swarm, nursery = self.swarm, self._nursery
        if swarm is None or nursery is None:
            return
        now = trio.current_time()
        for seed in self.web_seeds:
            if seed.usable and seed not in swarm.web_seeds:
                swarm.join_web_seed(seed, now)
                nursery.start_soon(seed.run, name=f"bip web seed {seed.shown}")

    def _stop_web_seeds(self, reason: str) -> None:
        """The web seeds leave the brain and stop (their requests go back to the brain)."""
        swarm = self.swarm
        if swarm is None:
            return
        now = trio.current_time()
        for seed in self.web_seeds:
            if seed in swarm.web_seeds:
                seed.finish(reason)
                swarm.web_seed_input(seed, PeerLeft(seed), now)

    def _restart_web_seeds(self, *, retry: bool) -> None:
        """Start the web seeds again (resumed, or wanting more after being complete): those
        stopped (``DONE``) are made anew; with ``retry``, those given up on too (a resume is
        a new run for them, as for trackers). A banned one stays out."""
        if self.swarm is None or self.completed.is_set() or self._nursery is None:
            return
        self._make_web_seeds()
        again = {WebSeedState.DONE, WebSeedState.GONE} if retry else {WebSeedState.DONE}
        self.web_seeds = [
            self._new_web_seed(seed.layout) if seed.state in again else seed
            for seed in self.web_seeds
        ]
        self._run_web_seeds()

    def _finish_web_seeds(self) -> None:
        """Complete: the web seeds leave the brain and stop (libtorrent drops them once
        finished). They start again if the torrent wants more (:meth:`set_files`)."""
        self._stop_web_seeds("the torrent is complete")

    def _web_seed_input(self, seed: WebSeed, event: Input) -> None:
        if self.swarm is not None:
            self.swarm.web_seed_input(seed, event, trio.current_time())
            self._check_complete()

    def _web_seed_lacks(self, swarm: Swarm, piece: int) -> bool:
        """Whether bad ``piece`` came from one web seed alone that then stops offering it
        (:meth:`WebSeed.lacks_bad_piece`: its copy of the piece's file differs), and still
        offers something: the brain is then to judge the piece sparing the web seed the ban
        as its sole source, but not its trust (2 points, banned at the brain's
        ``ban_trust``: its fourth such piece with no good ones between), as libtorrent's
        ``torrent::piece_failed`` when ``received_invalid_data`` says not to disconnect: a
        mirror with one file changed serves its other files, one with every file changed is
        banned after a few. A piece shared with others is judged as any, and peers' bad
        pieces as ever: they never come here."""
        brain = swarm.brain
        sources = brain.picker.requests.sources(piece)  # read before the verdict drops it
        if len(sources) != 1:
            return False
        [seed] = sources
        if not isinstance(seed, WebSeed) or seed not in swarm.web_seeds:
            return False
        if not seed.lacks_bad_piece(piece):
            return False
        # Nothing left to offer (every piece marked lacked, one by one): banned, as
        # libtorrent bans a web seed with no piece left.
        return brain.picker.availability.peer_piece_count(seed) > 0

    async def _web_block(self, seed: WebSeed, block: Block, data: bytes) -> None:
        """A block a web seed fetched: stored, then told to the brain, as a peer's."""
        swarm, handle = self.swarm, self.handle
        assert handle is not None
        if swarm is None or self._closing:  # a recheck began since, or closing (_begin_close)
            return
        if block.piece not in self._wanted:
            # Deselected while it was fetched: not written (see _store_block), given back.
            swarm.web_seed_input(seed, BlockDropped(seed, block), trio.current_time())
            return
        try:
            await self._disk.write_block(handle, block.piece, block.begin, data)
        except TorrentStateError as error:
            logger.debug("block not stored: %s", error)
            return
        now = trio.current_time()
        self._downloaded += block.length
        self._down.add(block.length, now=now)
        if seed in swarm.web_seeds:  # it may have left while the disk was busy
            swarm.feed(BlockReceived(seed, block), now)
        # Deselected while the disk was busy: dropped (the brain now, if any, told).
        self._drop_unwanted(self.swarm, block.piece)

    def _queue_block(self, swarm: Swarm, peer: Peer, message: Piece) -> None:
        """Hand a peer's block to the writer (:meth:`_store_block`) and tell the brain it
        arrived; stop reading the peer while the writer is behind (:meth:`_blocks_drained`
        reads it again)."""
        blocks = self._blocks
        length = len(message.block)
        block = Block(message.index, message.begin, length)
        if not blocks.accepts(length):
            # Past the hard bound (very many peers crossed the soft one at once): dropped,
            # and given back to the brain at once, which asks for it again (from any peer)
            # rather than waiting 60 s for its request to time out. Dropped by us, not
            # rejected: the peer served it and loses nothing (a reject from a peer choking
            # us would revoke its allowed-fast piece). The peer is paused below.
            logger.debug(
                "%s: block %d/%d from %s dropped: %d bytes wait for the disk",
                self._name,
                message.index,
                message.begin,
                peer.address,
                blocks.queued_bytes,
            )
            self._give_back(swarm, peer, message)
        else:
            if not blocks.idle and isinstance(message.block, memoryview):
                # It waits behind others: a view would keep its whole received chunk (up to
                # bip_peer's receive_size, 512 KiB) alive meanwhile, and the bound counts
                # blocks.
                message = Piece(message.index, message.begin, bytes(message.block))
            blocks.put((swarm, peer, message), length)
            # The peer delivered: whatever our disk takes now is not its delay (the brain
            # neither snubs it nor times its requests out while the block waits). It is the
            # brain's as received once stored (_store_block).
            swarm.feed(BlockArrived(peer, block), trio.current_time())
        if blocks.over and not self._manager.is_reading_paused(peer):
            # The disk is behind (a move, a check, a slow drive): read nothing more from this
            # peer until the writer catches up, as libtorrent stops reading a peer while its
            # disk queue is over the limit. Its blocks already read still come (one read at
            # most), and are taken: none is dropped to wait for a request timeout.
            self._manager.pause_reading(peer)

    async def _write_blocks(self) -> None:
        """The writer: store the queued blocks (:meth:`_store_block`), a block that would wait
        for room for a new piece set aside while the blocks behind it go by (they may be
        those that complete the pieces in memory, which makes the room)."""
        await self._blocks.run(
            self._store_block,
            self._blocks_drained,
            piece_of=_piece_of,
            waits=self._block_waits,
            drop=self._block_given_back,
        )

    def _block_waits(self, item: tuple[Swarm, Peer, Piece]) -> bool:
        """Whether storing a queued block now would wait for room for its piece, shared by
        every torrent of the session (only a piece not in memory yet can)."""
        swarm, _peer, message = item
        handle = self.handle
        if handle is None or swarm is not self.swarm or self._closing:
            return False  # _store_block drops it at once
        if message.index not in self._wanted:
            return False  # deselected: _store_block gives it back at once, holding nothing
        try:
            return self._disk.must_wait_for_room(handle, message.index)
        except TorrentStateError:
            return False  # removed: _store_block tells the brain

    def _block_given_back(self, item: tuple[Swarm, Peer, Piece]) -> None:
        """A block the writer could not keep waiting for room (too many set aside): the brain
        takes it back (it waited as arrived) and asks for it again, blaming nobody. Its peer
        is read no more until the blocks set aside drain (:meth:`_blocks_drained`): asked
        again at once, it would send the next block at once, given back too, and so on at
        the speed of the line."""
        swarm, peer, message = item
        self._give_back(swarm, peer, message)
        self._manager.pause_reading(peer)  # nothing if paused already, or gone

    def _give_back(self, swarm: Swarm, peer: Peer, message: Piece) -> None:
        """A peer's block we did not store (dropped or refused): the brain takes it back (it
        waited as arrived) and asks for it again, blaming nobody; nothing if the peer left or
        a new brain asks anew."""
        if swarm is self.swarm and peer in swarm.joined:
            block = Block(message.index, message.begin, len(message.block))
            swarm.feed(BlockDropped(peer, block), trio.current_time())

    def _blocks_drained(self) -> None:
        """The writer caught up (its queue is down to half its bound, and the blocks set aside
        too if one was given back): read the peers :meth:`_queue_block` and
        :meth:`_block_given_back` paused again (only they pause this torrent's peers;
        resuming one not paused does nothing)."""
        for peer in self.peers:
            self._manager.resume_reading(peer)

    async def _store_block(self, item: tuple[Swarm, Peer, Piece]) -> None:
        """Store a peer's block (the writer's task, in the order they came), then tell the
        brain: the block is the brain's once it is on its way to disk, as before."""
        swarm, peer, message = item
        if self._closing:
            # Closing (the session closes its torrents one by one): nothing more is written,
            # so that the last resume save trusts the files (_settle_resume) without waiting
            # for the torrents closed before. A block of a piece not complete is lost at the
            # close anyway (the disk drops pieces in memory).
            return
        if swarm is not self.swarm:
            # Asked by a brain a recheck or a move replaced: the new one asks again for what
            # it lacks, and this block would be written into a check (or a moved storage).
            return
        handle = self.handle
        assert handle is not None
        length = len(message.block)
        if message.index not in self._wanted:
            # Deselected while it waited: written, it would start its piece again in the
            # disk (a piece-sized buffer of the bound every torrent shares) only to be
            # dropped at once. Given back to the brain, as a block the queue refuses.
            self._give_back(swarm, peer, message)
            return
        try:
            await self._disk.write_block(handle, message.index, message.begin, message.block)
        except TorrentStateError as error:
            # Stopped by a fault (its event says why) or a block outside the piece: the
            # connection checked that we asked for it, so only the former happens here. The
            # brain takes it back (it waited as arrived): free to ask again, nobody blamed.
            logger.debug("block not stored: %s", error)
            self._give_back(swarm, peer, message)
            return
        now = trio.current_time()
        self._downloaded += length
        self._down.add(length, now=now)
        # It may have left while the disk was busy, or a recheck replaced the brain meanwhile.
        if swarm is self.swarm and peer in swarm.joined:
            swarm.feed(BlockReceived(peer, Block(message.index, message.begin, length)), now)
        # Deselected while the disk was busy (the brain now, if any, told: a check or a new
        # brain may have come meanwhile, and a move keeps the pieces in memory).
        self._drop_unwanted(self.swarm, message.index)

    def _request(self, peer: Peer, request: Request) -> None:
        info = self.info
        swarm = self.swarm
        assert info is not None
        assert swarm is not None  # peer_message checked (the peer is joined to it)
        if request.begin + request.length > info.piece_size(request.index):
            self._manager.remove_peer(peer, REASON_BAD_REQUEST)
            return
        if not swarm.brain.may_upload(peer, request.index):
            # Not revealed to it (super-seeding: libtorrent's "piece not superseeded"; the
            # connection refused most such requests already, for pieces never announced),
            # or lost from storage since announced.
            self._refuse(peer, request)
            return
        # Taken while we choke it: a piece we allowed it fast, which it may not take over and
        # over. Only those count: a request for another piece made while it was unchoked
        # can reach us after our choke (its event queued meanwhile), rejected by the choke
        # already (the uploader skips it); the connection refuses such requests made choked.
        connection = peer.connection
        if (
            connection.am_choking
            and request.index in connection.allowed_fast_to_peer
            and not swarm.fast_request(peer, request.index)
        ):
            self._manager.remove_peer(peer, REASON_FAST_ABUSED)
            return
        self._uploader.queue(peer, request)

    def _refuse(self, peer: Peer, request: Request) -> None:
        """Refuse ``request``, as the uploader answers a block it could not read
        (:func:`~bip._client._upload.refuse_request`: a reject with fast, else withdrawn)."""
        refuse_request(self._manager, peer, request.index, request.begin, request.length)

    async def disk_event(self, event: object) -> None:
        """An event of the disk about this torrent."""
        swarm = self.swarm
        if isinstance(event, DiskPieceVerified):
            if event.good and (swarm is None or swarm.brain.has_piece(event.piece)):
                # No brain: a check rebuilds it from the disk's have() (a recheck, or the check
                # of the files a move kept, which tells each piece it finds there), counting
                # done afresh; or the new brain was made from have() before this reached us.
                # Counted there, once: counting it here too would count it twice.
                return
            if event.good:
                if self._geometry is not None:
                    size = self._geometry.piece_data_size(event.piece)
                    self._unverified -= size
                    if event.piece in self._wanted:
                        self._done += size
                self._resume_dirty.set()
            else:
                self._bad_pieces += 1
                if self._geometry is not None:
                    # Data bytes, as _downloaded counts them (a v2 file's tail piece is
                    # shorter than its piece size).
                    self._corrupt += self._geometry.piece_data_size(event.piece)
                # Per piece, and a lying peer controls how many: DEBUG, as bip_disk logs it.
                logger.debug("%s: piece %d failed its hash check", self._name, event.piece)
            if swarm is not None:
                # A web seed whose copy of the file differs is not banned for it at once:
                # it loses trust, and the piece is fetched again from others.
                spared = not event.good and self._web_seed_lacks(swarm, event.piece)
                swarm.feed(
                    PieceVerified(event.piece, event.good, ban_sole_contributor=not spared),
                    trio.current_time(),
                )
                self._check_complete()
        elif isinstance(event, DiskPieceDiscarded):
            # Not stored (its write failed, or a fault stopped the storage first), or blocks of
            # it still arriving dropped (a stop, a recheck, a file a move kept): the brain
            # counts those blocks as received and would wait for them forever, so it is told
            # to fetch the piece again, blaming no peer. Per piece: DEBUG (bip_disk warns once
            # per fault).
            logger.debug("%s: piece %d not stored: %s", self._name, event.piece, event.reason)
            if swarm is not None and not self._stopped.is_set():
                swarm.feed(BrainPieceDiscarded(event.piece), trio.current_time())
        elif isinstance(event, TorrentFailed):
            self._fail(f"storage: {event.reason}")
        elif isinstance(event, PieceLost):
            # A read fault that lost it stops the torrent (TorrentFailed follows); a write that
            # re-created its deleted file does not. Either way the brain learns it, so that it
            # wants the piece again and stops revealing it.
            # bip_disk already warns once per fault, however many pieces it cost. Lost to a
            # file a move kept: no brain while that check runs, and the one made after it
            # from the disk's have() lacks the piece already (so neither hears it here).
            logger.debug("%s: piece %d lost: %s", self._name, event.piece, event.reason)
            if swarm is not None and swarm.brain.has_piece(event.piece):
                if self._geometry is not None:
                    size = self._geometry.piece_data_size(event.piece)
                    self._unverified += size
                    if event.piece in self._wanted:
                        self._done -= size
                self._resume_dirty.set()
                swarm.feed(BrainPieceLost(event.piece), trio.current_time())

    def tick(self, now: float) -> None:
        """Run the brain's timers; count the time run and the time seeded (the queue ranks
        seeds by them, and by the seeding goals they meet)."""
        if self.swarm is not None:
            self.swarm.tick(now)
        last, self._last_tick = self._last_tick, now
        if not self.halted and now > last:
            # libtorrent's active_time: any phase but a hold (its first check counts, as
            # libtorrent's unpaused check does); the download time is this less the seeding.
            self._active_time += now - last
            if self._phase is TorrentPhase.SEEDING:
                self._seeding_time += now - last
                if self.swarm is not None and self.swarm.brain.is_seed:
                    self._seed_time += now - last

    # -- background work --------------------------------------------------------------------

    def _sent(self, peer: Peer, block: Block) -> None:
        """A block went to a peer's send queue."""
        now = trio.current_time()
        self._uploaded += block.length
        self._up.add(block.length, now=now)
        swarm = self.swarm
        if swarm is not None and peer in swarm.joined:
            swarm.feed(BlockSent(peer, block), now)

    async def _save_resume_loop(self) -> None:
        """Save the resume data when it changed, at most every ``resume_interval`` seconds
        (a pause saves at once), and the state file alone when only its counters changed
        (uploads, times: libtorrent's ``if_counters_changed``), so that a crash loses at most
        an interval of them. A save that failed is tried again: after a fault, the
        interval doubles at each failure up to a minute (a lasting fault warns once a minute,
        not at every interval)."""
        interval = self._config.resume_interval
        while True:
            await self._save_wanted()
            full = self._resume_dirty.is_set()
            self._resume_dirty = trio.Event()
            self._state_dirty = trio.Event()
            self._save_now = trio.Event()
            if full:
                await self._save_resume(sync=False)  # dirty again if it failed
                if self._resume_save_failed:
                    interval = min(2 * interval, max(_MAX_RESUME_RETRY, interval))
                else:
                    interval = self._config.resume_interval
            else:
                # A new queue position, or the counters, alone: the state file, not the whole
                # resume data.
                async with self._save_lock:
                    if not self._removed:
                        await self._save_state()
            with trio.move_on_after(interval):
                await self._save_now.wait()

    async def _save_wanted(self) -> None:
        """Return once something is to be saved: the resume data, or the state file (its
        counters looked at once per ``resume_interval``: they change all the time a torrent
        runs, and a wake-up per change would be one per block sent)."""
        while not (self._resume_dirty.is_set() or self._state_dirty.is_set()):
            if self._counters_changed():
                return
            with trio.move_on_after(self._config.resume_interval):
                async with trio.open_nursery() as nursery:

                    async def watch(event: trio.Event) -> None:
                        await event.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch, self._resume_dirty)
                    nursery.start_soon(watch, self._state_dirty)

    def _counters_changed(self) -> bool:
        """Whether the counters the state file keeps differ from those it was last given
        (from 0 when it was never written)."""
        if self._store is None or self._removed:
            return False
        saved = self._saved_state
        return self._current_state().counters() != (
            saved.counters() if saved is not None else SavedState().counters()
        )

    async def _save_resume(self, *, sync: bool) -> bytes | None:
        """Save the disk's resume data, the peers, the files chosen and the paused state.
        Returns the disk's record saved (for the close to settle: :meth:`_settle_resume`),
        ``None`` when none was."""
        if self._store is None:
            return None
        saved: bytes | None = None
        async with self._save_lock:
            if self._removed:  # its files are deleted for good (maybe while this waited)
                return None
            # The disk's record not while checking: it is half rebuilt then (the last one
            # stays; a recheck deleted it, so that a run cut short checks everything again).
            handle = self.handle
            if handle is not None and self._phase is not TorrentPhase.CHECKING:
                try:
                    data = await self._disk.save_resume_data(handle, sync=sync)
                    await self._store.save_resume(data)
                    saved = data
                    self._resume_save_failed = False
                except (TorrentStateError, StorageError, OSError) as error:
                    logger.warning("%s: cannot save resume data: %s", self._name, error)
                    # Still to be saved: a transient fault must not keep the pieces verified
                    # since out of the file until something else changes (as _save_selection).
                    self._resume_save_failed = True
                    self._resume_dirty.set()
            await self._save_peers()
            await self._save_selection()
            await self._save_state()
        return saved

    async def _save_selection(self) -> None:
        """Keep the files :meth:`set_files` or :meth:`set_file_priorities` chose (when they
        changed since written)."""
        if self._store is None or not self._selection_dirty:
            return
        self._selection_dirty = False
        choice = self._file_choice
        try:
            if isinstance(choice, tuple):
                await self._store.save_selection(None, choice)
            else:
                await self._store.save_selection(choice)
        except OSError as error:
            self._selection_dirty = True
            logger.warning("%s: cannot save its file selection: %s", self._name, error)

    async def _save_state(self) -> None:
        """Keep whether the user paused the torrent, whether it super-seeds, whether it is
        auto-managed and its queue position, and its counters, for the next run (when one
        of them changed since the state file said). Under the save lock. A torrent the
        queue holds back is not saved as paused: the next run's queue decides again."""
        if self._store is None:
            return
        state = self._current_state()
        saved = self._saved_state
        if saved is not None and state == saved and state.counters() == saved.counters():
            return
        try:
            await self._store.save_state(state)
        except OSError as error:
            logger.warning("%s: cannot save its state: %s", self._name, error)
            return
        self._saved_state = state

    def _current_state(self) -> SavedState:
        """The flags and counters :meth:`_save_state` would write now."""
        return SavedState(
            self.paused,
            self.super_seeding,
            self._auto_managed,
            self._queue_position,
            total_uploaded=self._earlier_uploaded + self._uploaded,
            total_downloaded=self._earlier_downloaded + self._downloaded,
            active_time=int(self._active_time),  # whole seconds, as libtorrent's
            finished_time=int(self._seeding_time),
            seeding_time=int(self._seed_time),
        )


def _piece_of(item: tuple[Swarm, Peer, Piece]) -> int:
    """The piece a queued block belongs to (the writer keeps each piece's blocks in order)."""
    return item[2].index


def _first_leaf(error: BaseException) -> BaseException:
    """The first exception an exception group holds (``error`` itself when not a group): what
    went wrong, without the nurseries' wrapping."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _per_file(choice: _FileChoice, info: Info) -> tuple[int, ...]:
    """Each of ``info``'s files' priority under ``choice``: the default for every file, 4 for
    the selected and 0 for the others, or the priorities themselves (cut or padded with the
    default to the file count: only a torrent that failed on them has another count). A BEP
    47 pad file's is 0 whatever ``choice`` says, as libtorrent forces it: it holds no data,
    and its priority would otherwise raise the piece it shares with a file not wanted."""
    count = len(info.files)
    if choice is None:
        chosen: tuple[int, ...] = (DEFAULT_FILE_PRIORITY,) * count
    elif isinstance(choice, frozenset):
        chosen = tuple(DEFAULT_FILE_PRIORITY if i in choice else 0 for i in range(count))
    else:
        chosen = choice[:count] + (DEFAULT_FILE_PRIORITY,) * (count - len(choice))
    return tuple(
        0 if entry.is_pad else priority
        for entry, priority in zip(info.files, chosen, strict=True)  # both ``count`` long
    )


def _check_choice(info: Info, choice: _FileChoice, *, prefix: str = "") -> None:
    """Refuse a choice of files that does not fit ``info``: a selection with an index that
    is not a file of it, priorities that are not one per file.

    Raises:
        TorrentError: ``prefix`` then what does not fit.
    """
    if isinstance(choice, frozenset):
        _check_selection(info, choice, prefix=prefix)
    elif choice is not None and len(choice) != len(info.files):
        raise TorrentError(
            f"{prefix}{len(choice)} file priorities for {len(info.files)} files (one per"
            " file, pad files included)"
        )


def _within_files(info: Info, selection: frozenset[int], name: str) -> frozenset[int]:
    """A magnet link's ``so`` selection without the indices past ``info``'s files, which
    libtorrent ignores too (logged); none left selects no file."""
    count = len(info.files)
    within = frozenset(index for index in selection if index < count)
    if len(within) < len(selection):
        logger.info(
            "%s: %d of the files the link selects are past the torrent's %d files: ignored",
            name,
            len(selection) - len(within),
            count,
        )
    return within


def _check_selection(info: Info, selection: frozenset[int], *, prefix: str = "") -> None:
    """Refuse a file selection with an index that is not a file of ``info``.

    Raises:
        TorrentError: ``prefix`` then "no file N to select", N the lowest such index.
    """
    count = len(info.files)
    outside = [index for index in selection if not 0 <= index < count]
    if outside:
        raise TorrentError(
            f"{prefix}no file {min(outside)} to select: the torrent has {count} files"
            f" (0..{count - 1})"
        )


def layers_missing(info: Info, layers: Mapping[bytes, bytes]) -> bool:
    """Whether a v2 (or hybrid) torrent has a file larger than one piece whose piece layer is
    not in ``layers`` (keyed by pieces root): its pieces cannot be checked against v2 hashes,
    nor its layers served."""
    return info.is_v2 and any(
        entry.pieces_root is not None
        and entry.length > info.piece_length
        and entry.pieces_root not in layers
        for entry in info.files
    )


def must_fetch_layers(info: Info, layers: Mapping[bytes, bytes]) -> bool:
    """Whether a torrent must fetch piece layers before its pieces can be checked: a v2-only
    one with :func:`layers_missing`.

    A hybrid torrent's pieces are checked with SHA-1 when its layers are unknown (bip_disk's
    ``PieceVerifier``): its download does not wait for them.
    """
    return not info.is_v1 and layers_missing(info, layers)
