"""A torrent's progress as a frozen snapshot, for progress bars and reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["TorrentPhase", "TorrentStatus"]


class TorrentPhase(enum.Enum):
    """Where a torrent of a session stands.

    - ``METADATA``: a magnet link's info dictionary is being fetched from peers (BEP 9).
    - ``CHECKING``: the data already on disk is being hashed (or resume data read).
    - ``DOWNLOADING``: pieces are being fetched.
    - ``SEEDING``: every selected piece is here and verified; pieces are served.
    - ``PAUSED``: out of its swarm (``Torrent.pause``): no peers, no sources, storage kept.
    - ``QUEUED``: auto-managed and waiting for its turn (the session's queue holds it back,
      as libtorrent's queued torrents): out of its swarm as if paused, and a torrent queued
      before its check does not check yet. Not a pause of the user's (``Torrent.paused``).
    - ``FAILED``: a storage fault stopped the torrent (see :attr:`TorrentStatus.error`).
    - ``REMOVED``: taken out of its session (``Session.remove_torrent``), failed before or
      not: the :class:`~bip._client.Torrent` object stays readable, its counts as they were
      last (no peers, no transfer rates). libtorrent has no status for a removed torrent
      (its handle becomes invalid); a phase of its own says so rather than the last one.
    """

    METADATA = "metadata"
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    PAUSED = "paused"
    QUEUED = "queued"
    FAILED = "failed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class TorrentStatus:
    """A snapshot of one torrent (:meth:`bip._client.Torrent.status`).

    Attributes:
        name: the torrent's name (the magnet's ``dn``, or its hash, until metadata arrives).
        phase: what it is doing.
        total: bytes selected for download (0 until the metadata is known).
        done: bytes of those verified and written.
        pieces: pieces verified, all files.
        num_pieces: pieces in the torrent (0 until the metadata is known).
        download_rate: payload bytes per second received, over the last seconds.
        upload_rate: payload bytes per second sent.
        downloaded: payload bytes received this session (end-game duplicates included).
        uploaded: payload bytes sent this session.
        all_time_downloaded: payload bytes received over all the torrent's runs: this
            session's and those its state file kept (libtorrent's ``all_time_download``).
        all_time_uploaded: payload bytes sent over all its runs (``all_time_upload``).
        peers: connected peers.
        utp_peers: those of them connected over uTP (the rest over TCP).
        seeds: connected peers that have every piece.
        web_seeds: BEP 19 web seeds in use (not given up nor banned), a source as peers are.
        bad_pieces: pieces that failed their hash check this session.
        error: why the torrent failed, for ``FAILED``; kept once it is ``REMOVED`` (a
            failed torrent removed), ``None`` for any other.
        checked: while ``CHECKING``, the share of the check done (0.0 to 1.0), else ``None``.
        holepunch_rendezvous: BEP 55 rendezvous we sent for this torrent's peers (a dial to
            a peer learnt from PEX failed, and the peer that listed it was asked).
        holepunch_connects: BEP 55 connects we acted on (a uTP dial to the address a relay
            gave, for our rendezvous or the other end's).
        holepunch_peers: connections made after such a connect (either side's dial): peers
            reached by holepunch, this session.
        known_peers: addresses in the torrent's peer list (every source's, connected or
            not: :attr:`bip._client.Torrent.peer_list`).
        dialling: dials of the torrent's under way.
        super_seeding: the super-seeding flag is set (``Torrent.set_super_seeding``; it
            takes effect while the torrent seeds), libtorrent's ``torrent_status.flags``
            ``super_seeding``.
        auto_managed: the session's queue starts and stops it (``Torrent.set_auto_managed``),
            libtorrent's ``torrent_status.flags`` ``auto_managed``.
        queue_position: its place in the session's queue of downloads, 0 first
            (libtorrent's ``torrent_status.queue_position``), auto-managed or not; ``-1``
            for a seed.
        active_time: seconds the torrent ran, out of any hold (paused, queued,
            rechecking), its first check included, over all its runs (its state file keeps
            them, as libtorrent's resume data ``active_time``; libtorrent's
            ``active_duration``).
        seeding_time: seconds of those it ran with every selected piece verified
            (libtorrent's ``finished_duration``, kept as ``finished_time``): ``active_time``
            less this is its download time, for the seeding goals.
        seed_goals_met: every selected piece is here, and the torrent met one of its seeding
            goals (``ClientConfig.share_ratio_limit``, ``seed_time_ratio_limit``,
            ``seed_time_limit``, as :meth:`bip._client.Session.set_queue_limits` changed
            them): when auto-managed, it ranks after the seeds that met none, and is queued
            in their favour when ``active_seeds`` is short. ``False`` while it downloads.
    """

    name: str
    phase: TorrentPhase
    total: int
    done: int
    pieces: int
    num_pieces: int
    download_rate: float
    upload_rate: float
    downloaded: int
    uploaded: int
    peers: int
    seeds: int
    bad_pieces: int
    error: str | None = None
    checked: float | None = None
    web_seeds: int = 0
    utp_peers: int = 0
    holepunch_rendezvous: int = 0
    holepunch_connects: int = 0
    holepunch_peers: int = 0
    known_peers: int = 0
    dialling: int = 0
    super_seeding: bool = False
    auto_managed: bool = False
    queue_position: int = -1
    active_time: float = 0.0
    seeding_time: float = 0.0
    seed_goals_met: bool = False
    all_time_downloaded: int = 0
    all_time_uploaded: int = 0

    @property
    def complete(self) -> bool:
        """Whether every selected piece is verified (the torrent seeds, or would if it were
        not paused or queued); never once ``REMOVED`` (its files may be deleted)."""
        if self.phase in (TorrentPhase.PAUSED, TorrentPhase.QUEUED):
            return self.num_pieces > 0 and self.done >= self.total
        return self.phase is TorrentPhase.SEEDING

    @property
    def eta(self) -> float | None:
        """Seconds left at the current download rate; ``None`` when it cannot be told."""
        if self.complete:
            return 0.0
        if self.download_rate <= 0 or self.num_pieces == 0:
            return None
        return (self.total - self.done) / self.download_rate
