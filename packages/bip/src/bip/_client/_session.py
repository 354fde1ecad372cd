"""The session: the libraries' services composed into a client, shared by its torrents.

:func:`open_session` opens, in this order (and closes in the reverse one):

- bip_disk's :class:`~bip_disk.DiskManager` (it outlives everything that reads or writes);
- bip_handshake's :class:`~bip_handshake.Handshaker`: listens, dials (TCP first, uTP if TCP
  fails, or the reverse: :class:`~bip_handshake.PeerDialer`), MSE as configured;
- the :class:`Connector` (:mod:`._connector`): the :class:`~bip_handshake.PeerSink` every
  source feeds (trackers, the DHT, PEX, the user's peers), keeping one
  :class:`~bip_handshake.PeerList` per torrent, and the task that dials the best of them
  while the session is under ``max_peers``;
- uTP (BEP 29) on the UDP port of each TCP listener, or over the DHT's socket when it is
  bound there (:mod:`._utp`); accepted uTP connections go to the handshaker;
- bip_peer's :class:`~bip_peer.PeerManager` with the BEP 9 :class:`~bip_peer.MetadataExchange`,
  BEP 52 ``PieceLayerExchange`` (hash requests: v2 piece layers) and BEP 11
  :class:`~bip_peer.PeerExchange` services, and, when the session dials uTP, BEP 55
  :class:`~bip_peer.HolepunchService` with the client's :class:`HolepunchPolicy` (a dial to a
  peer learnt from PEX that fails asks the peer that listed it for a rendezvous; a connect is
  dialled over uTP at once);
- bip_utracker's :class:`~bip_utracker.TrackerClient` and our :class:`HttpTrackerClient`
  (when trackers are on);
- :class:`ExternalAddresses`, a peer service voting on our external address (peers'
  ``yourip``, HTTP trackers' BEP 24 ``external ip``, the DHT's BEP 42 address): once decided,
  it with each listening port is one of our addresses for PEX and holepunch, so that we never
  dial ourselves nor relay a rendezvous to ourselves (:attr:`Session.external_addresses`);
- with :attr:`ClientConfig.natpmp` or :attr:`ClientConfig.upnp`, NAT-PMP and UPnP IGD
  (:mod:`._port_mapping`): the listen ports mapped on the gateway (before the peer manager,
  so deleted after every peer is gone); the external TCP port granted is what trackers, the
  DHT and peers' BEP 10 ``p`` hear (:attr:`Session.external_port`,
  :attr:`Session.port_mappings`);
- with :attr:`ClientConfig.lsd`, Local Service Discovery (BEP 14, :mod:`._lsd`): every
  public torrent announced on the local network (:class:`LsdPeers`), the peers heard there
  dialled;

and runs six tasks: the connector's, four that route between them and the torrents
(completed handshakes become peers of the manager; the manager's events go to the peer's
torrent; the disk's events go to their torrent; a ticker runs the brains' timers), and the
queue's. Torrents are found by any of their swarm ids (v1 hash, truncated v2 hash), the way
the handshaker names them. A peer belongs to the torrent its hash named when the manager took
it (:class:`_PeerOwners`), not to whichever torrent has that hash when its events are routed:
a peer whose torrent was removed before its arrival was routed is disconnected with it, and
the late events of a removed torrent's peers never reach a torrent of the same hash added
back.

The queue (libtorrent's auto-managed torrents): the session keeps the line of the torrents
that check or download their data (their queue positions, 0 first, auto-managed or not, as
libtorrent's) and asks its :class:`~bip._client._queue.TorrentQueue` which auto-managed
torrents run (``ClientConfig.active_downloads``, ``active_seeds``, ``active_checking``,
``active_limit``), holding the others back (:attr:`Torrent.queued`). Its own task asks every
``auto_manage_interval`` seconds, and soon after a torrent asks (added or removed, paused or
resumed, made auto-managed or not, its check ended, it completed, it failed), but at most
once every :data:`QUEUE_MIN_GAP` seconds, as libtorrent's ``trigger_auto_manage``: a burst of
adds or of checks ending is decided in one pass, not one pass per torrent over every torrent.
The gap is shorter with few auto-managed torrents (:data:`QUEUE_GAP_PER_TORRENT` each): a pass
costs in proportion to them, so the share of the time spent deciding stays as small, and a
handful of short checks do not wait a second each for their turn.
A torrent that waits for a decision is held meanwhile (it announces and checks nothing). A
move in line or new limits are decided at once. A check that ends hands its slot on at once,
without waiting for the next decision (:meth:`TorrentQueue.checks_to_start`): a hundred tiny
checks do not go ``active_checking`` per gap. A session without an auto-managed torrent
builds no facts and asks nothing.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import logging
import math
import random
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, ClassVar, Final

import trio

from bip import __version__
from bip_disk import DiskEvent, DiskManager, open_disk_manager
from bip_handshake import (
    DEFAULT_MAX_PER_HOST,
    CompletedHandshake,
    Dialer,
    DialFailure,
    Extensions,
    ExternalIPVoter,
    Family,
    Handshaker,
    IPFilter,
    LocalServiceDiscovery,
    MappingProtocol,
    PeerAddress,
    PeerDialer,
    PeerId,
    PeerList,
    PeerSink,
    PortMapping,
    ProxyConfig,
    SocksDialer,
    UtpSocket,
    open_handshaker,
)
from bip_metainfo import InfoHash, MagnetLink, Metainfo
from bip_peer import (
    DEFAULT_MAX_PEER_REQUESTS,
    MessageReceived,
    MetadataExchange,
    Peer,
    PeerAdded,
    PeerExchange,
    PeerManager,
    PeerManagerConfig,
    PeerManagerFullError,
    PeerRemoved,
    PieceLayerExchange,
    Port,
    check_rate,
    open_peer_manager,
)
from bip_utracker import TrackerClient, open_tracker_client

from ._config import ClientConfig, TorrentOptions, positive_seconds
from ._connector import CONNECTOR_MESSAGES, Connector
from ._discovery import DhtLike, DhtPeers, LsdPeers, PeerSource, TrackerAnnouncer
from ._external_address import ExternalAddresses
from ._holepunch import HolepunchPolicy
from ._http_tracker import HttpTrackerClient
from ._local_hosts import first_of_each_family
from ._lsd import open_session_lsd
from ._port_mapping import (
    SessionPortMapping,
    mappable_ports,
    open_session_port_mapping,
    pinhole_ports,
)
from ._queue import QueueDecision, QueueKind, QueueLimits, TorrentQueue
from ._resume import ResumeStore, SavedState
from ._swarm import MAX_OUT_REQUESTS
from ._torrent import REASON_REMOVED, Torrent, TorrentError, check_storage_name
from ._utp import UtpRouter, open_session_utp
from ._webseed_http import WebSeedClient

__all__ = [
    "OUR_EXTENSIONS",
    "REASON_DUPLICATE",
    "REASON_IP_FILTER",
    "Session",
    "open_session",
]

logger = logging.getLogger("bip.client")

OUR_EXTENSIONS: Final = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
"""The reserved bits we set: BEP 10 (metadata, PEX, ...) and BEP 6 (fast extension)."""
REASON_DUPLICATE: Final = "duplicate connection"
"""Why a second connection to a peer we are already connected to is closed."""
REASON_IP_FILTER: Final = "blocked by the IP filter"
"""Why a connected peer is closed when :meth:`Session.set_ip_filter` sets a filter that
blocks it."""
_TICK: Final = 0.1  # seconds between passes of the ticker over the brains' deadlines
QUEUE_MIN_GAP: Final = 1.0
"""Seconds between two decisions of the queue asked for by torrents at least (libtorrent's
``trigger_auto_manage`` puts one off while the last is less than a second old): however many
torrents ask meanwhile, the queue decides once."""
QUEUE_GAP_PER_TORRENT: Final = 0.004
"""Seconds of gap between two decisions asked for by torrents per auto-managed torrent, up to
:data:`QUEUE_MIN_GAP` (reached at 250): a pass over the facts of one torrent costs some 10 us,
so deciding takes well under 1 % of the time however many torrents ask."""
# Per peer, in messages: room for the deepest request queue the brain builds (capped at
# MAX_OUT_REQUESTS) and for our answers to the peer's own requests (at most our reqq; the
# upload workers wait for room anyway), plus cancels, the rejects the connection writes
# itself (of a cancelled request, of requests beyond our reqq: one entry per read, bounded in
# bytes by the manager) and slack. Haves, chokes, interest, the rejects Torrent._refuse sends
# and those a choke trails do not count here (PeerManager.send_control): one have per piece
# per peer piles up behind a slow peer's blocks while we download fast. They have their own
# bound per peer (9 bytes a piece, four reqq of rejects and 64 KiB, about what they hold in
# memory), and the byte bound (send_queue_bytes, 2 MiB) holds the rest.
_SEND_QUEUE: Final = MAX_OUT_REQUESTS + DEFAULT_MAX_PEER_REQUESTS + 64


class _Keep(enum.Enum):
    """The default of :meth:`Session.set_rate_limits`'s arguments: leave that limit alone."""

    KEEP = enum.auto()


_KEEP: Final = _Keep.KEEP


class Session:
    """A running client; build it with :func:`open_session`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        config: ClientConfig,
        *,
        disk: DiskManager,
        handshaker: Handshaker,
        manager: PeerManager,
        metadata: MetadataExchange,
        layers: PieceLayerExchange,
        pex: PeerExchange,
        trackers: TrackerClient | None,
        peer_id: PeerId,
        dht: DhtLike | None,
        external: ExternalAddresses,
        http_trackers: HttpTrackerClient | None = None,
        dialer: PeerDialer | None = None,
        utp_sockets: tuple[UtpSocket, ...] = (),
        holepunch: HolepunchPolicy | None = None,
        port_mapping: SessionPortMapping,
    ) -> None:
        """Internal: use :func:`open_session`."""
        self._nursery = nursery
        self.connector = Connector(
            handshaker=handshaker,
            find=self.find,
            # The manager's places in use, not its peers: a peer removed holds its place until
            # its removal is queued, and a dial for it would be refused (a wasted connection).
            connected_peers=lambda: manager.places_in_use,
            our_addresses=lambda: self.external_addresses or handshaker.listen_addresses,
            max_peers=config.max_peers,
            connection_speed=config.connection_speed,
            new_list=lambda: _new_peer_list(config),
        )
        """The torrents' peer lists and the task dialling from them; the sink every
        discovery source feeds."""
        self.config = config
        self.disk = disk
        self.handshaker = handshaker
        self.manager = manager
        self.metadata = metadata
        self.layers = layers
        self.pex = pex
        self.trackers = trackers
        self.http_trackers = http_trackers
        self.peer_id = peer_id
        self.dht = dht
        self.dialer = dialer
        """How peers are dialled (TCP and uTP, through the proxy when there is one; its
        statistics count each transport); ``None`` when the config brought its own ``dial``."""
        self.utp_sockets = utp_sockets
        """The uTP sockets: those accepting peers (one per listener), then any used only to
        dial out."""
        self.holepunch = holepunch
        """BEP 55 (its ``service`` speaks ``ut_holepunch``); ``None`` when it is off
        (:attr:`ClientConfig.holepunch`) or the session cannot dial uTP."""
        self.external = external
        """Our external address: the votes (its ``voter``) and the addresses taken as ours."""
        self.port_mapping = port_mapping
        """NAT-PMP: the gateway's mappings of our ports (its ``mapper`` is ``None`` when
        :attr:`ClientConfig.natpmp` is off or could not start)."""
        self._rng = random.Random(config.seed_rng)
        # Each peer's torrent, recorded as the manager takes it (a service: every way in).
        self._owners = _PeerOwners(self.find)
        manager.add_service(self._owners)
        # The connections whose PORT message (BEP 5) reached the DHT: one each (weak: a
        # connection gone takes its entry along).
        self._dht_port_peers: weakref.WeakSet[Peer] = weakref.WeakSet()
        self.web_seed_client = WebSeedClient(
            local_address=_http_local_address(config),
            ssrf_mitigation=config.ssrf_mitigation,
            allow_idna=config.allow_idna,
            # Web seeds are peer connections (libtorrent's proxy_peer_connections).
            proxy=_peer_proxy(config),
        )
        """Fetches from the torrents' BEP 19 web seeds (one TLS context for all), from the
        address the HTTP tracker client connects from, through the peers' proxy if any."""
        self._torrents: dict[bytes, Torrent] = {}  # by every swarm id
        self._all: list[Torrent] = []
        # The queue: the policy, the line of auto-managed torrents that check or download
        # (their positions), each torrent's key in the policy's decisions, and the position
        # a torrent had when its last run ended (where it goes back in line).
        self._queue = TorrentQueue(config.queue_limits)
        self._line: list[Torrent] = []
        self._line_dirty = False  # a torrent came, left or changed phase: renumber
        self._keys: dict[Torrent, int] = {}
        self._next_key = 0
        self._saved_positions: dict[Torrent, int] = {}
        self._auto_managed = 0  # how many torrents are: none (the usual case) costs nothing
        self._auto_manage_interval = config.auto_manage_interval
        self._queue_wake = trio.Event()
        # A check ended (its slot is free): the queue's task starts the next at once.
        self._check_ended = trio.Event()
        self._last_pass = -math.inf  # when the queue last decided
        self._closing = False
        # The removals under way, by every swarm id of the torrent going (set once over): an
        # add of the same torrent waits for its removal, which deletes its resume files (and,
        # with the data, its files) by name, the new torrent's as much as the old one's.
        self._removals: dict[bytes, trio.Event] = {}
        # The adds reading a state file now, by swarm id, each told (its event set) when a
        # removal of a torrent of that swarm begins: what it read may be the state of a
        # torrent whose removal deleted it, however soon that removal ended. Bounded by
        # the adds under way.
        self._state_reads: dict[bytes, list[trio.Event]] = {}
        self._sources: list[Callable[[], PeerSource]] = []
        if dht is not None:
            self._sources.append(lambda: DhtPeers(dht, interval=config.dht_interval))
        self.lsd: tuple[LocalServiceDiscovery, ...] = ()
        """Local Service Discovery per address family while it runs (empty when
        :attr:`ClientConfig.lsd` is off or no group could be joined)."""

    @property
    def listen_port(self) -> int:
        """The TCP port we accept peers on (0 if we do not listen): every listener's when
        ``ClientConfig.listen`` gives them port 0 (the handshaker puts them all on the one
        port the system picks, so that the port trackers, the DHT and peers are told reaches
        each address); the first listener's when their ports were given and differ."""
        addresses = self.handshaker.listen_addresses
        return addresses[0].port if addresses else 0

    @property
    def external_port(self) -> int:
        """The TCP port peers should dial, as trackers, the DHT and peers (BEP 10 ``p``)
        are told: the external port the NAT-PMP gateway maps to :attr:`listen_port` once
        granted (:attr:`ClientConfig.natpmp`), else :attr:`listen_port`."""
        return self.port_mapping.external_tcp_port

    @property
    def port_mappings(self) -> tuple[PortMapping, ...]:
        """What the NAT-PMP gateway is asked to map (TCP listen ports, UDP ports) and what
        it granted (``external_port``, ``None`` while not granted); empty with NAT-PMP off
        or not started."""
        return self.port_mapping.mappings()

    @property
    def external_addresses(self) -> tuple[PeerAddress, ...]:
        """Our external addresses as the internet sees them, once voted on (peers' ``yourip``,
        trackers' BEP 24 ``external ip``, the DHT, the NAT-PMP gateway's address): each
        decided IP (IPv4 first) with each of our listening ports (TCP and uTP) and each
        external port the gateway maps for us. Empty until decided. PEX and holepunch take
        them as ours."""
        return self.external.addresses

    @property
    def rate_limits(self) -> tuple[float | None, float | None]:
        """The upload and download limits now, bytes per second over all peers (``None``:
        unlimited); :attr:`config` keeps the ones the session started with."""
        return self.manager.rate_limits

    @property
    def limit_local_peers(self) -> bool:
        """Whether peers on loopback and local networks are held to the limits now
        (:attr:`ClientConfig.limit_local_peers`; :attr:`config` keeps the start)."""
        return self.manager.limit_local_peers

    def set_rate_limits(
        self,
        *,
        upload: float | _Keep | None = _KEEP,
        download: float | _Keep | None = _KEEP,
        limit_local_peers: bool | _Keep = _KEEP,
    ) -> None:
        """Change the upload and/or download limit of all peers together, at once.

        Bytes per second; ``None`` or ``0`` lifts a limit, a limit left out stays as it is.
        Web seeds are not limited (:attr:`ClientConfig.upload_rate_limit`).
        ``limit_local_peers`` switches whether peers on local networks are held to the
        limits (:attr:`ClientConfig.limit_local_peers`).

        Raises:
            TypeError: a limit is not a number (or is a bool); ``limit_local_peers`` is
                not a bool.
            ValueError: a limit is negative, NaN or infinite. Nothing changes then, not
                even the other settings.
            TorrentError: the session is closed (its ``async with`` block was left).
        """
        self._check_open()
        # All checked before any is set, so a bad one leaves the session as it was.
        if not isinstance(upload, _Keep):
            check_rate(upload, "upload")
        if not isinstance(download, _Keep):
            check_rate(download, "download")
        if not isinstance(limit_local_peers, _Keep) and not isinstance(limit_local_peers, bool):
            raise TypeError(f"limit_local_peers must be a bool, not {limit_local_peers!r}")
        if not isinstance(upload, _Keep):
            self.manager.set_rate_limits(upload=upload)
        if not isinstance(download, _Keep):
            self.manager.set_rate_limits(download=download)
        if not isinstance(limit_local_peers, _Keep):
            self.manager.set_rate_limits(limit_local_peers=limit_local_peers)

    @property
    def ip_filter(self) -> IPFilter | None:
        """The IP filter in force now (:attr:`ClientConfig.ip_filter` at the start;
        :attr:`config` keeps that one)."""
        return self.handshaker.ip_filter

    def set_ip_filter(self, ip_filter: IPFilter | None) -> int:
        """Replace the IP filter of every torrent's peers (``None``: none), at once.

        As libtorrent's ``session::set_ip_filter``: blocked addresses are no longer dialled
        or accepted, and the peers connected now that it blocks are disconnected (their
        :class:`~bip_peer.PeerRemoved` says :data:`REASON_IP_FILTER`); the others stay. The
        session's DHT filters its nodes by it too (blocked nodes are neither queried nor
        kept). Trackers and web seeds are not filtered.

        Returns:
            How many connected peers were disconnected.

        Raises:
            TypeError: ``ip_filter`` is not an :class:`~bip_handshake.IPFilter` or ``None``.
            TorrentError: the session is closed (its ``async with`` block was left).
        """
        self._check_open()
        self.handshaker.set_ip_filter(ip_filter)
        if self.dht is not None:
            self.dht.set_ip_filter(ip_filter)
        if ip_filter is None:
            return 0
        blocked = [peer for peer in self.manager.peers if ip_filter.blocks(peer.address.host)]
        for peer in blocked:
            self.manager.remove_peer(peer, REASON_IP_FILTER)
        if blocked:
            logger.info("IP filter: disconnected %d blocked peer(s)", len(blocked))
        return len(blocked)

    @property
    def torrents(self) -> tuple[Torrent, ...]:
        """The torrents added."""
        return tuple(self._all)

    def peer_list(self, torrent: Torrent) -> PeerList | None:
        """The peers ``torrent`` knows (every source's, with their history); ``None`` for a
        torrent not of this session."""
        return self.connector.peer_list(torrent)

    def add_source(self, factory: Callable[[], PeerSource]) -> None:
        """Run a peer source (a DHT...) for every torrent added from now on.

        Raises:
            TorrentError: the session is closed (its ``async with`` block was left).
        """
        self._check_open()
        self._sources.append(factory)

    def find(self, info_hash: InfoHash | bytes) -> Torrent | None:
        """The torrent with this hash (or swarm id), if added."""
        ids = info_hash.swarm_ids() if isinstance(info_hash, InfoHash) else [info_hash[:20]]
        for swarm_id in ids:
            torrent = self._torrents.get(swarm_id)
            if torrent is not None:
                return torrent
        return None

    def is_private(self, info_hash: InfoHash) -> bool:
        """Whether a torrent is private (BEP 27: no PEX, no DHT)."""
        torrent = self.find(info_hash)
        return torrent is not None and torrent.info is not None and torrent.info.private

    async def add_torrent(self, source: Metainfo | MagnetLink, options: TorrentOptions) -> Torrent:
        """Start a torrent: its metadata, storage check, download and seeding run in the
        background; wait with :meth:`Torrent.wait_complete`.

        Its state file (``options.save_dir/.bip/HASH.state``, unless ``options.resume`` is
        off) is read once, here, before the torrent is made: the flags it keeps are the
        torrent's from the moment this returns (:meth:`Torrent.status` shows them), each
        unless the options say otherwise. A torrent that was paused when its last run ended
        starts paused, as libtorrent's resume data carries ``paused``: it joins no swarm
        until :meth:`Torrent.resume`; one that super-seeded super-seeds. A state file that
        cannot be read, or is not ours, is ignored (with a warning); a key of it whose value
        is not ours is ignored alone (with a DEBUG log), as libtorrent ignores a bad
        optional field of its resume data, and the others are kept.

        A paused torrent (so started, or ``options.paused``) that is not auto-managed checks
        its data at once all the same (its pause keeps it out of its swarm only; a
        paused seed is then ready to serve on :meth:`Torrent.resume`), unlike libtorrent,
        whose ``should_check_files`` starts no paused torrent's check. A paused
        auto-managed one checks at once only when nothing is to be hashed (its resume
        data vouch for the files, or it has none yet); a check that would hash waits for
        its resume and then for the queue's leave, as libtorrent's, so that a session
        restarted with many paused auto-managed torrents hashes nothing.

        The torrent takes the last place in the queue, or its saved place among the
        torrents added back from the same saved queue. An auto-managed one
        (``options.auto_managed``, or as its resume files say) starts ``QUEUED``: it
        announces, dials and checks nothing until the queue lets it, soon (the queue decides
        once for a burst of adds).

        A torrent named as the save directory's ``.bip`` folder, where the resume data are
        kept, is refused when its files go to the save directory (no ``options.storage``; a
        custom storage names them its own way); a magnet link's torrent fails once its
        metadata says so.

        A torrent whose :meth:`remove_torrent` is still running (the same info hash, or a
        swarm of it) is added once that removal returned: it deletes the torrent's resume
        files, and with ``delete_data`` its files, by name, which would be the new torrent's
        (and bip_disk refuses the new one while it still holds, or deletes, the old one).
        The wait is bounded: the removal itself is. Its state file is read after it (none is
        left then).

        Raises:
            TorrentError: the torrent is already in the session (or was while this read its
                state file, and its removal began meanwhile, whether it ended or not), or is
                named ``.bip`` and stored in the save directory, or the session is closed
                (its ``async with`` block was left; also while this waited or read the state
                file): nothing is added.
        """
        self._check_open()
        if isinstance(source, Metainfo) and options.storage is None:
            check_storage_name(source.info)  # before its state is read from that very folder
        info_hash = source.info.info_hash if isinstance(source, Metainfo) else source.info_hash
        await self._removal_over(info_hash)
        saved: SavedState | None = SavedState()
        removed_meanwhile = trio.Event()
        if options.resume:
            for swarm_id in info_hash.swarm_ids():
                self._state_reads.setdefault(swarm_id, []).append(removed_meanwhile)
            try:
                saved = await ResumeStore(options.save_dir, info_hash).load_state()
            finally:
                for swarm_id in info_hash.swarm_ids():
                    reads = self._state_reads[swarm_id]
                    reads.remove(removed_meanwhile)
                    if not reads:
                        del self._state_reads[swarm_id]
        # What the torrent starts with: the options' flags, else the saved ones (a file that
        # could not be read holds none: the defaults).
        flags = SavedState() if saved is None else saved
        paused = options.paused if options.paused is not None else flags.paused
        super_seeding = (
            options.super_seeding if options.super_seeding is not None else flags.super_seeding
        )
        auto_managed = (
            options.auto_managed if options.auto_managed is not None else flags.auto_managed
        )
        # Looked for after the read: nothing awaits between this and the torrent's indexing.
        self._check_open()  # it may have closed meanwhile: its nursery takes no torrent then
        if self.find(info_hash) is not None:
            raise TorrentError(f"torrent {info_hash.hex()} is already in the session")
        if removed_meanwhile.is_set() or self._removing(info_hash):
            # In the session while the read ran (added by another call meanwhile, or there
            # already), and its removal began, ended or not: what was read was the state of
            # a torrent going away (which its removal deletes), and waiting again here could
            # go on for as long as others add and remove it. As a duplicate, refused.
            raise TorrentError(
                f"torrent {info_hash.hex()} was in the session while this added it, and its"
                " removal began meanwhile: add it again once that removal returned"
            )
        sources: list[PeerSource] = [factory() for factory in self._sources]
        if self.trackers is not None and self.config.trackers:
            # BEP 12 tiers as the torrent has them; each extra tracker a tier of its own.
            tiers = [*_trackers_of(source), *([url] for url in options.extra_trackers)]
            # UDP trackers go through the proxy's UDP relay too (the tracker client's).
            proxied = _tracker_proxy(self.config) is not None
            if any(tiers):
                sources.append(
                    TrackerAnnouncer(
                        self.trackers,
                        tiers,
                        peer_id=self.peer_id,
                        rng=random.Random(self._rng.getrandbits(64)),
                        http_client=self.http_trackers,
                        # Through a proxy a tracker sees the proxy's address, not ours.
                        on_external_ip=None if proxied else self.external.tracker_vote,
                        min_interval=self.config.tracker_min_interval,
                        # A name the proxy resolves is not looked up here.
                        resolve_peer_names=not _proxy_resolves_peer_names(self.config),
                        # BEP 7: listening in both families, one announcer each (not by the
                        # tracker client's sockets: 0.0.0.0 alone has an IPv6 one too).
                        families={address.family for address in self.handshaker.listen_addresses},
                    )
                )
        torrent = Torrent(
            source,
            options,
            config=self.config,
            disk=self.disk,
            manager=self.manager,
            handshaker=self.handshaker,
            metadata=self.metadata,
            layers=self.layers,
            sources=sources,
            # Read at each announce: a NAT-PMP mapping may come, or move, later.
            listen_port=lambda: self.external_port,
            rng=random.Random(self._rng.getrandbits(64)),
            on_info_hash=self._rename,
            on_unheld=self.connector.wake,
            web_seed_client=self.web_seed_client,
            holepunch=self.holepunch,
            peer_sink=self.connector,
            paused=paused,
            super_seeding=super_seeding,
            auto_managed=auto_managed,
            # Held back until the queue says otherwise (just below): a torrent with no room
            # never announces, dials nor checks.
            queued=auto_managed,
            # Not read again: written once a flag changes, or the counters (at most once per
            # resume_interval).
            saved_state=saved,
            queue_soon=self._queue_wake_up,
            on_auto_managed=self._auto_managed_changed,
            on_check_end=self._check_slot_freed,
            queue_limits=lambda: self._queue.limits,  # its status's seeding goals
        )
        torrent.peer_list = self.connector.attach(torrent)
        self._index(torrent, info_hash)
        self._all.append(torrent)
        self._keys[torrent] = self._next_key
        self._next_key += 1
        # Every download has a position, auto-managed or not (libtorrent's): a saved one is
        # its place among those added back.
        if flags.queue_position >= 0:
            self._saved_positions[torrent] = flags.queue_position
        self._join_line(torrent)
        if auto_managed:
            self._auto_managed += 1
        if not torrent.halted:  # a paused or queued one is registered when it starts
            self.handshaker.register(info_hash)
        self._queue_wake.set()  # in line already: no renumbering for it
        self._nursery.start_soon(torrent.run, name=f"bip torrent {info_hash.hex()[:12]}")
        await trio.lowlevel.checkpoint()
        return torrent

    async def remove_torrent(self, torrent: Torrent, *, delete_data: bool = False) -> None:
        """Take ``torrent`` out of the session for good (libtorrent's ``remove_torrent``,
        with ``delete_files`` as ``delete_data``); returns once done.

        It is closed: its tasks stop (its trackers hear ``stopped``, as on any close), its
        peers are disconnected (:data:`~bip._client._torrent.REASON_REMOVED`; also one the
        peer manager took just before, which the torrent had not heard of yet), its hashes are
        unregistered from the handshaker (inbound handshakes for it are refused), its peer
        list is forgotten, it leaves :attr:`torrents` and :meth:`find`, and its resume files
        (``.bip/HASH.*``) are deleted. With ``delete_data`` its files are deleted too,
        through bip_disk's :meth:`~bip_disk.DiskManager.remove_torrent` on the torrent's own
        storage: the torrent's files only, never anything else under or outside its save
        directory (a file that cannot be deleted is logged by bip_disk). The
        :class:`Torrent` object stays readable: its status says
        :attr:`~bip._client.TorrentPhase.REMOVED` (from the moment this is called), with the
        counts it had last; its controls raise :class:`TorrentError` from then on, and
        :meth:`Torrent.wait_complete` raises unless it had completed. Adding the torrent
        again meanwhile waits for this to return (:meth:`add_torrent`).

        A torrent that never reached the disk (waiting for its check's turn or for its
        resume, or failed before) has its files deleted all the same, as libtorrent deletes
        them in every state: by bip_disk's :meth:`~bip_disk.DiskManager.delete_files`, in
        the storage the torrent would use (the torrent's files only, as above). If some
        could not be deleted it is removed all the same, and :class:`TorrentError` names
        what was left.

        Raises:
            TorrentError: the torrent is not in the session (removed already, or another
                session's), or the session is closed (nothing is removed nor deleted then);
                or, with ``delete_data``, the torrent never reached the disk and was
                removed, but some of its files could not be deleted (named).
        """
        self._check_open()
        self._check_ours(torrent)
        self._all.remove(torrent)
        removal = trio.Event()
        swarm_ids = [key for key, value in self._torrents.items() if value is torrent]
        for swarm_id in swarm_ids:
            del self._torrents[swarm_id]
        # Every connection of it, also those whose arrival is not routed yet (the torrent
        # does not hold them): as libtorrent's disconnect_all, none outlives it.
        for peer in self._owners.peers_of(torrent):
            self.manager.remove_peer(peer, REASON_REMOVED)
        self.connector.detach(torrent)
        self._keys.pop(torrent, None)
        self._saved_positions.pop(torrent, None)
        if torrent.auto_managed:
            self._auto_managed -= 1
        checking = torrent._queue_kind() is QueueKind.CHECKING
        # Out of line before the await: a queue move meanwhile must not renumber a line
        # that still holds it (the others close up at once).
        self._renumber()
        torrent._set_queue_position(-1)  # out of the session: its status says so
        # Registered just before the try, whose end sets it: a removal that began is over
        # once this returns or raises, never left for an add of it to wait on for ever.
        for swarm_id in swarm_ids:
            self._removals[swarm_id] = removal  # an add of it waits (add_torrent)
            for reading in self._state_reads.get(swarm_id, ()):
                reading.set()  # an add reading its state refuses (add_torrent)
        try:
            await torrent._remove(delete_data=delete_data)
        finally:
            for swarm_id in swarm_ids:
                if self._removals.get(swarm_id) is removal:
                    del self._removals[swarm_id]
            removal.set()
            self._queue_wake_up()  # its place in line, and its slot, are free
            if checking:
                self._check_slot_freed()  # the next check need not wait for a decision

    def _removing(self, info_hash: InfoHash) -> bool:
        """Whether a torrent of a swarm of ``info_hash`` is being removed now."""
        return any(swarm_id in self._removals for swarm_id in info_hash.swarm_ids())

    async def _removal_over(self, info_hash: InfoHash) -> None:
        """Wait until the removal of a torrent of a swarm of ``info_hash`` under way, if
        any, is over. Bounded: a removal is (its work is shielded, and bounded itself), and
        a swarm id is waited for once."""
        for swarm_id in info_hash.swarm_ids():
            removal = self._removals.get(swarm_id)
            if removal is not None:
                await removal.wait()

    # -- the queue (libtorrent's auto-managed torrents) --------------------------------------

    @property
    def queue_limits(self) -> QueueLimits:
        """How many auto-managed torrents run at once now (``ClientConfig.active_downloads``
        and the settings after it; :attr:`config` keeps those the session started with)."""
        return self._queue.limits

    @property
    def auto_manage_interval(self) -> float:
        """Seconds between two evaluations of the queue when nothing calls for one sooner
        (``ClientConfig.auto_manage_interval`` at the start)."""
        return self._auto_manage_interval

    def set_queue_limits(
        self,
        *,
        active_downloads: int | _Keep = _KEEP,
        active_seeds: int | _Keep = _KEEP,
        active_checking: int | _Keep = _KEEP,
        active_limit: int | _Keep = _KEEP,
        dont_count_slow_torrents: bool | _Keep = _KEEP,
        inactive_down_rate: float | _Keep = _KEEP,
        inactive_up_rate: float | _Keep = _KEEP,
        auto_manage_startup: float | _Keep = _KEEP,
        auto_manage_interval: float | _Keep = _KEEP,
        share_ratio_limit: float | _Keep | None = _KEEP,
        seed_time_ratio_limit: float | _Keep | None = _KEEP,
        seed_time_limit: float | _Keep | None = _KEEP,
    ) -> None:
        """Change the queue's settings (as :class:`ClientConfig` names them; those left out
        stay as they are), and let the queue decide again at once: torrents start, or are
        queued, as the new limits say. The seeding goals (``share_ratio_limit``,
        ``seed_time_ratio_limit``, ``seed_time_limit``; ``None`` turns one off) rank the
        seeds, and the torrents' status reports them from now on.

        Raises:
            TypeError: a setting of the wrong type.
            ValueError: a limit below -1, a rate, a time or a goal negative or not finite
                (``auto_manage_interval`` must be positive). Nothing changes then.
            TorrentError: the session is closed (its ``async with`` block was left).
        """
        self._check_open()
        # Any: each value's type is QueueLimits' to check (it raises on a wrong one).
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("active_downloads", active_downloads),
                ("active_seeds", active_seeds),
                ("active_checking", active_checking),
                ("active_limit", active_limit),
                ("dont_count_slow_torrents", dont_count_slow_torrents),
                ("inactive_down_rate", inactive_down_rate),
                ("inactive_up_rate", inactive_up_rate),
                ("auto_manage_startup", auto_manage_startup),
                ("share_ratio_limit", share_ratio_limit),
                ("seed_time_ratio_limit", seed_time_ratio_limit),
                ("seed_time_limit", seed_time_limit),
            )
            if not isinstance(value, _Keep)
        }
        # All checked before any is set, so a bad one leaves the queue as it was.
        limits = dataclasses.replace(self._queue.limits, **changes)
        interval = self._auto_manage_interval
        if not isinstance(auto_manage_interval, _Keep):
            if isinstance(auto_manage_interval, bool) or not isinstance(
                auto_manage_interval, int | float
            ):
                raise TypeError(
                    f"auto_manage_interval must be a number, not {auto_manage_interval!r}"
                )
            if not positive_seconds(auto_manage_interval):
                raise ValueError("auto_manage_interval must be positive and finite")
            interval = float(auto_manage_interval)
        self._queue.set_limits(limits)
        if interval != self._auto_manage_interval:
            self._auto_manage_interval = interval
            self._queue_wake_up()  # the wait under way was for the old interval
        self._update_queue()

    def queue_position(self, torrent: Torrent) -> int:
        """``torrent``'s place in the queue, 0 first (libtorrent's ``queue_position``):
        torrents that check or download have one, auto-managed or not, in the order they
        were added unless moved; ``-1`` for a seed. Auto-managed downloads start in this
        order as the queue has room (``ClientConfig.active_downloads``).

        Raises:
            TorrentError: the torrent is not in the session.
        """
        self._check_ours(torrent)
        if self._line_dirty:  # only when a torrent came, left or changed phase since
            self._renumber()
        return torrent.queue_position

    def queue_position_up(self, torrent: Torrent) -> None:
        """Move ``torrent`` one place up the queue (towards 0), libtorrent's
        ``queue_position_up``; the queue decides again at once. A torrent first in line, or
        without a position (a seed), does not move.

        Raises:
            TorrentError: the torrent is not in the session, or the session is closed.
        """
        self._move_in_line(torrent, lambda here: here - 1)

    def queue_position_down(self, torrent: Torrent) -> None:
        """Move ``torrent`` one place down the queue (libtorrent's
        ``queue_position_down``), as :meth:`queue_position_up` does up.

        Raises:
            TorrentError: the torrent is not in the session, or the session is closed.
        """
        self._move_in_line(torrent, lambda here: here + 1)

    def queue_position_top(self, torrent: Torrent) -> None:
        """Move ``torrent`` to the head of the queue (libtorrent's
        ``queue_position_top``): it starts at once if it was queued, and the download last
        in line among those running is queued if the queue has no room for both.

        Raises:
            TorrentError: the torrent is not in the session, or the session is closed.
        """
        self._move_in_line(torrent, lambda here: 0)

    def queue_position_bottom(self, torrent: Torrent) -> None:
        """Move ``torrent`` to the end of the queue (libtorrent's
        ``queue_position_bottom``).

        Raises:
            TorrentError: the torrent is not in the session, or the session is closed.
        """
        self._move_in_line(torrent, lambda here: len(self._line) - 1)

    def set_queue_position(self, torrent: Torrent, position: int) -> None:
        """Move ``torrent`` to ``position`` in the queue (0 first; a position past the end
        is the end), libtorrent's ``queue_position_set``; the torrents in between move one
        place, and the queue decides again at once. A torrent without a position (a seed)
        does not move.

        Raises:
            TypeError: ``position`` is not an int.
            ValueError: ``position`` is negative.
            TorrentError: the torrent is not in the session, or the session is closed.
        """
        if isinstance(position, bool) or not isinstance(position, int):
            raise TypeError(f"a queue position is an int, not {position!r}")
        if position < 0:
            raise ValueError(f"a queue position is 0 or more, not {position}")
        self._move_in_line(torrent, lambda here: position)

    # -- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        """Refuse a change once the session closes, before anything is touched: its
        tasks, sockets and files are gone (or going), and a torrent added or removed then
        would be half done."""
        if self._closing:
            raise TorrentError("the session is closed")

    def _check_ours(self, torrent: Torrent) -> None:
        if torrent not in self._all:
            raise TorrentError(f"{torrent!r} is not in the session (removed, or another's)")

    def _move_in_line(self, torrent: Torrent, where: Callable[[int], int]) -> None:
        """Move ``torrent`` from its place in line to ``where(place)`` (clamped to the
        line), then let the queue decide."""
        self._check_open()
        self._check_ours(torrent)
        if self._line_dirty:
            self._renumber()
        here = torrent.queue_position
        if here >= 0:
            there = max(0, min(where(here), len(self._line) - 1))
            if there != here:
                self._line.pop(here)
                self._line.insert(there, torrent)
                self._saved_positions.pop(torrent, None)  # placed by the user from now on
                for position in range(min(here, there), max(here, there) + 1):
                    self._line[position]._set_queue_position(position)
        self._update_queue()

    def _in_line(self, torrent: Torrent) -> bool:
        """Whether ``torrent`` holds a queue position: checking or downloading, auto-managed
        or not (libtorrent's rule: a seed is no longer in line to download)."""
        return torrent._queue_kind() in (QueueKind.CHECKING, QueueKind.DOWNLOADING)

    def _join_line(self, torrent: Torrent) -> None:
        """Give a torrent just added its place in line at once (its status shows it when
        :meth:`add_torrent` returns), as :meth:`_place` says; those after it move one
        place."""
        line = self._line = self._place(self._line, [torrent])
        for position in range(line.index(torrent), len(line)):
            line[position]._set_queue_position(position)

    def _place(self, line: list[Torrent], newcomers: list[Torrent]) -> list[Torrent]:
        """``line`` with ``newcomers`` in their places: one without a saved position at the
        end (in the order given), one with before the first torrent of ``line`` saved
        further back than it, so that torrents added again in any order take their old
        order again (newcomers in the same place by saved position, then by key). O(n log
        n) for any number of newcomers."""
        positions = self._saved_positions
        last: list[Torrent] = []
        saved: list[tuple[int, int, Torrent]] = []
        for torrent in newcomers:
            position = positions.get(torrent)
            if position is None:
                last.append(torrent)
            else:
                saved.append((position, self._keys[torrent], torrent))
        if saved:
            # Before the first torrent of the line whose saved position is greater: the
            # first whose running maximum is, by bisection.
            highest: list[int] = []
            for torrent in line:
                mark = positions.get(torrent, -1)
                highest.append(max(mark, highest[-1]) if highest else mark)
            before: dict[int, list[Torrent]] = {}
            for position, _key, torrent in sorted(saved, key=lambda item: item[:2]):
                before.setdefault(bisect.bisect_right(highest, position), []).append(torrent)
            merged: list[Torrent] = []
            for index, torrent in enumerate(line):
                merged.extend(before.pop(index, ()))
                merged.append(torrent)
            merged.extend(before.pop(len(line), ()))
            line = merged
        else:
            line = list(line)
        line.extend(last)
        return line

    def _auto_managed_changed(self, torrent: Torrent, enabled: bool) -> None:
        """``torrent`` (of the session) was made auto-managed, or no longer."""
        if torrent in self._keys:
            self._auto_managed += 1 if enabled else -1

    def _renumber(self) -> None:
        """Bring the line up to date: torrents that left it (completed, failed, removed)
        leave their place, those that joined it take theirs (:meth:`_place`: at the end, or
        back where their last run left them); then each hears its place."""
        self._line_dirty = False
        line = [
            torrent for torrent in self._line if torrent in self._keys and self._in_line(torrent)
        ]
        placed = set(line)
        newcomers = [
            torrent for torrent in self._all if torrent not in placed and self._in_line(torrent)
        ]
        self._line = line = self._place(line, newcomers)
        for position, torrent in enumerate(line):
            torrent._set_queue_position(position)
        placed.update(newcomers)
        for torrent in self._all:
            if torrent not in placed:
                torrent._set_queue_position(-1)

    def _queue_wake_up(self) -> None:
        """Let the queue's task decide soon (a torrent came, left, changed phase or asked:
        called from anywhere, so the decision is not taken there); the line is renumbered
        then."""
        self._line_dirty = True
        self._queue_wake.set()

    def _update_queue(self) -> None:
        """Ask the queue which auto-managed torrents run, and hold back or start them: at
        once, for the user's controls of the queue; else from the queue's task."""
        if self._closing:
            return
        now = self._last_pass = trio.current_time()
        if self._line_dirty:
            self._renumber()
        if not self._auto_managed:
            return  # nothing to decide (and no sampling worth keeping)
        # Facts for the auto-managed torrents alone; the others only count.
        facts = []
        forced = forced_checking = 0
        for torrent in self._all:
            if torrent._unqueued_check:
                continue  # no check of the queue's (libtorrent's checking_resume_data)
            if torrent.paused and torrent._disk_checking:
                # Paused during its check, which bip_disk cannot stop: it hashes on, so it
                # keeps its checking slot (the queue counts no paused torrent).
                forced_checking += 1
            if torrent.auto_managed:
                facts.append(torrent._queue_facts(self._keys[torrent], now))
            elif not torrent.paused:
                kind = torrent._queue_kind()
                if kind is QueueKind.CHECKING:
                    forced_checking += 1
                elif kind is not QueueKind.FAILED:
                    forced += 1
        decision = self._queue.decide(facts, now, forced=forced, forced_checking=forced_checking)
        self._apply(decision)

    def _apply(self, decision: QueueDecision) -> None:
        """Hold back what the queue queues first (their slots free), then start the rest."""
        torrents = [torrent for torrent in self._all if torrent.auto_managed]
        for torrent in torrents:
            if self._keys[torrent] in decision.queue:
                torrent._enqueue()
        for torrent in torrents:
            if self._keys[torrent] in decision.run:
                torrent._dequeue()

    async def _run_queue(self) -> None:
        """Let the queue decide every ``auto_manage_interval`` seconds (slow torrents are
        found so), and soon after a torrent asks, but at most once every
        :data:`QUEUE_MIN_GAP` seconds: the asks of a burst are decided together. Meanwhile
        a check that ends hands its slot on at once (:meth:`_start_checks`)."""
        while True:
            with trio.move_on_after(self._auto_manage_interval):
                await self._queue_wake.wait()
            gap = min(QUEUE_MIN_GAP, QUEUE_GAP_PER_TORRENT * self._auto_managed)
            # Bounded by the gap: each turn waits for a check to end, or for the gap's end.
            while (wait := self._last_pass + gap - trio.current_time()) > 0:
                with trio.move_on_after(wait):
                    await self._check_ended.wait()
                if self._check_ended.is_set():
                    self._check_ended = trio.Event()
                    self._start_checks()
            self._queue_wake = trio.Event()
            self._check_ended = trio.Event()  # the decision allots the checks' slots too
            self._update_queue()

    def _check_slot_freed(self) -> None:
        """A torrent's check ended (it downloads, seeds or failed now): the queue's task
        starts the next waiting check at once (called from the torrent's task: the checks
        are not started there), and decides soon for the rest."""
        self._check_ended.set()
        self._queue_wake.set()

    def _start_checks(self) -> None:
        """Start the auto-managed checks waiting for a slot that the checks under way leave
        (:meth:`TorrentQueue.checks_to_start`), between two decisions. Positions as they
        stand: a check ending does not change the order of those waiting. O(n): a pass
        over the torrents without their facts (a session full of checks comes here once per
        check ending)."""
        if self._closing or not self._auto_managed:
            return
        checking = 0
        waiting: dict[int, Torrent] = {}
        for torrent in self._all:
            # Counted as _update_queue counts them: a check that hashes nothing is none of
            # the queue's, and a paused torrent's counts only while under way.
            if torrent._unqueued_check or torrent._queue_kind() is not QueueKind.CHECKING:
                continue
            if torrent.paused:
                if torrent._disk_checking:
                    checking += 1
                continue
            if torrent.auto_managed and torrent.queued and not torrent._disk_checking:
                waiting[self._keys[torrent]] = torrent
            else:
                checking += 1  # under way, let in, or not the queue's to hold
        if not waiting:
            return
        pairs = [(torrent.queue_position, key) for key, torrent in waiting.items()]
        for key in self._queue.checks_to_start(checking, pairs):
            waiting[key]._dequeue()

    def _index(self, torrent: Torrent, info_hash: InfoHash) -> None:
        for swarm_id in info_hash.swarm_ids():
            self._torrents[swarm_id] = torrent

    def _rename(self, torrent: Torrent, info_hash: InfoHash) -> None:
        """A magnet's torrent learnt its full hashes (hybrid): serve both swarms.

        Two magnets of one hybrid torrent, one naming its v1 hash and one its v2 hash, are
        both accepted (no swarm id in common), but each learns the other's id with the
        metadata. One learning it while the other holds that id must not take it over:
        peers of the other would be routed to it, and its removal would unindex and
        unregister the other. It fails instead, before anything is indexed or registered
        (libtorrent's ``duplicate_torrent``). A failed torrent stays in the session (under
        its own id) until removed, so its twin fails alike if it learns its metadata
        meanwhile: both fail, as libtorrent's ``test_torrent_conflict`` expects; only a twin
        learning it after the failed one was removed runs on.

        A twin being removed counts as there until its removal returned, as for
        :meth:`add_torrent`: that removal deletes the resume files and, with its data, the
        files of the twin's hashes, by name.

        Raises:
            TorrentError: another torrent of the session has one of the swarm ids, or is
                being removed.
        """
        for swarm_id in info_hash.swarm_ids():
            other = self._torrents.get(swarm_id)
            if other is not None and other is not torrent:
                raise TorrentError(
                    f"hybrid torrent {info_hash.hex()} is already in the session as {other!r}"
                    " (a magnet link of its other hash)"
                )
            if other is None and swarm_id in self._removals:
                raise TorrentError(
                    f"hybrid torrent {info_hash.hex()} is being removed from the session (a"
                    " magnet link of its other hash): add it again once that removal returned"
                )
        self._index(torrent, info_hash)
        self.handshaker.register(info_hash)

    async def _accept(self) -> None:
        """Completed handshakes become peers of their torrent."""
        async for handshake in self.handshaker.completed():
            torrent = self.find(handshake.info_hash)
            ip_filter = self.handshaker.ip_filter
            if (
                torrent is None
                # Paused (or rechecking) since the handshake began: the handshaker no
                # longer serves it, but this one was delivered already.
                or torrent.halted
                or torrent.refuses(handshake.address)
                # Delivered just before set_ip_filter blocked it, and waited here since.
                or (ip_filter is not None and ip_filter.blocks(handshake.address.host))
            ):
                self.connector.handshake_refused(torrent, handshake)
                await _close(handshake)
                continue
            keep, old = self._settle_duplicate(torrent, handshake)
            if not keep:
                self.connector.handshake_refused(torrent, handshake)
                await _close(handshake)
                continue
            try:
                if old is None:
                    self.manager.add_peer(handshake, num_pieces=torrent.num_pieces)
                else:
                    # In the old connection's place: at max_peers, removing it and then
                    # adding this one was refused (the old one holds its place while it
                    # leaves), and both connections were lost. Refused still, the old one
                    # is kept.
                    self.manager.replace_peer(
                        old, handshake, reason=REASON_DUPLICATE, num_pieces=torrent.num_pieces
                    )
            except (PeerManagerFullError, trio.ClosedResourceError):
                self.connector.handshake_refused(torrent, handshake)
                await _close(handshake)
            else:
                self.connector.handshake_taken(torrent, handshake)

    def _settle_duplicate(
        self, torrent: Torrent, handshake: CompletedHandshake
    ) -> tuple[bool, Peer | None]:
        """Whether to keep a new connection to a peer we may already be connected to, and
        the connection it replaces if so (removed as ``REASON_DUPLICATE``).

        Two clients that find each other dial each other, often at once: two connections for
        one pair, from one host. Both sides keep the same one, with no message exchanged: the
        one opened by the side with the greater peer id (libtorrent breaks the tie the same
        way). Only a connection from the same host is a duplicate: a peer id is no identity
        (every peer the client meets learns it, and nothing proves it), so a connection from
        another host giving a connected peer's id is kept beside it. Settling across hosts
        let whoever claimed an id first keep it: an impostor connected from its own address
        first, and the real peer was refused for good, its inbound connections and our dials
        alike (libtorrent 2 settles by peer id whatever the hosts, and so has that weakness).
        The cost: a peer reachable at two addresses (dual stack, IPv4 and IPv6) may be
        connected at both, one extra connection, each held to the host limits. A connection
        being removed (still among the manager's peers until its task runs) is no duplicate:
        refusing a new one for it would lose both. The new one takes its place, though (it
        is returned): added beside it, it was refused at ``max_peers`` or
        ``max_peers_per_host``, the leaving one holding its place until its task runs.
        """
        host = handshake.address.normalized().host
        # The manager's peers, not the torrent's: a peer is there as soon as it is added,
        # before its PeerAdded event reaches the torrent.
        same = [
            peer
            for peer in self.manager.peers
            if peer.peer_id == handshake.peer_id
            and peer.address.normalized().host == host
            and self.find(peer.info_hash) is torrent
        ]
        old = next((peer for peer in same if self.manager.is_connected(peer)), None)
        if old is None:
            # None connected: a leaving one's place, if any (replace_peer takes it, else adds
            # the new one as add_peer does).
            return True, same[0] if same else None
        ours, theirs = bytes(self.peer_id), bytes(handshake.peer_id)
        opener = ours if handshake.direction == "outbound" else theirs
        if opener != max(ours, theirs):
            return False, None
        return True, old

    async def _route_peers(self) -> None:
        """The peer manager's events, to the peer's torrent (the one it was taken for, while
        in the session; a peer of none is disconnected). Nothing here waits for the disk
        (a torrent's blocks go to its own writer, and a torrent whose writer is behind stops
        reading its own peers, not this loop): one torrent's slow store or storage move
        holds up no other torrent's peers. A bug in a torrent's handling fails that torrent
        alone (:meth:`Torrent.unexpected`; a plain ``try``, as this runs per message).
        The connector hears of the messages it acts on alone (not of every block)."""
        connector_messages = CONNECTOR_MESSAGES
        async for event in self.manager.events():
            if not isinstance(event, PeerAdded | MessageReceived | PeerRemoved):
                continue  # no other kind yet
            peer = event.peer
            owner = self._owners.owner(peer)
            # Its own torrent, while in the session: never another of the same hash added back.
            torrent = owner if owner is not None and self.find(peer.info_hash) is owner else None
            if isinstance(event, PeerRemoved):
                self._owners.forget(peer)
                if torrent is not None:
                    try:
                        torrent.peer_removed(peer)
                    except Exception as error:
                        torrent.unexpected(error)
                if owner is not None:
                    # A removed torrent's list is gone: its slot is free all the same.
                    try:
                        self.connector.peer_removed(owner, peer, event.reason)
                    except Exception as error:
                        owner.unexpected(error)
                else:
                    self.connector.wake()
            elif torrent is None:
                # Its torrent was removed before this was routed (or never was ours): the
                # torrent could not disconnect a peer it did not hold yet.
                self.manager.remove_peer(peer, REASON_REMOVED)
            elif isinstance(event, MessageReceived):
                if isinstance(event.message, Port):
                    self._learn_dht_node(peer, event.message)
                else:
                    try:
                        if type(event.message) in connector_messages:
                            self.connector.peer_message(torrent, peer, event.message)
                        torrent.peer_message(peer, event.message)
                    except Exception as error:
                        torrent.unexpected(error)
            elif isinstance(event, PeerAdded):
                try:
                    torrent.peer_added(peer)
                except Exception as error:
                    torrent.unexpected(error)
                # After the torrent's BITFIELD or HAVE_ALL, which BEP 3 allows only as the
                # first message (libtorrent sends its PORT after them too).
                self._tell_dht_port(peer)

    def _tell_dht_port(self, peer: Peer) -> None:
        """BEP 5: a peer that runs a DHT too hears which UDP port ours is on (not that of a
        DHT through a proxy: only its relay reaches it, as libtorrent sends no PORT without
        a listen socket for the connection)."""
        if self.dht is None or Extensions.DHT not in peer.extensions or _dht_proxied(self.dht):
            return
        ports = [a.port for a in self.dht.addresses if a.family == peer.address.family]
        if ports:
            port = ports[0]
            if peer.address.family == 4:
                # The port the gateway maps to the DHT's, as libtorrent's external UDP port.
                port = self.port_mapping.external_port(MappingProtocol.UDP, port) or port
            self.manager.send_nowait(peer, Port(port))

    def _learn_dht_node(self, peer: Peer, message: Port) -> None:
        """A peer's DHT port: its node is worth a ping (BEP 5). One PORT per connection: a
        peer repeating it (each a ping, 7 bytes apiece) must not have the DHT ping at its
        bidding; a peer's DHT port seldom changes while connected (libtorrent takes each)."""
        if (
            self.dht is not None
            and message.port
            and peer not in self._dht_port_peers
            and not self.is_private(peer.info_hash)
        ):
            self._dht_port_peers.add(peer)
            self.dht.add_node(PeerAddress(peer.address.host, message.port))

    async def _route_disk(self) -> None:
        """The disk's events, to their torrent."""
        event: DiskEvent
        async for event in self.disk.events():
            torrent = self.find(event.torrent.info_hash)
            if torrent is not None and torrent.handle == event.torrent:
                with torrent._contained():  # a bug there fails that torrent alone
                    await torrent.disk_event(event)

    async def _tick(self) -> None:
        while True:
            await trio.sleep(_TICK)
            now = trio.current_time()
            for torrent in self._all:
                try:
                    torrent.tick(now)
                except Exception as error:
                    torrent.unexpected(error)  # a bug there fails that torrent alone

    async def _close(self) -> None:
        # The torrents closing one by one must not start queued ones.
        self._closing = True
        # Nor may a torrent waiting for its turn be paused, resumed (its trackers told
        # ``started`` again), rechecked or moved meanwhile: every one refuses from now on.
        for torrent in self._all:
            torrent._begin_close()
        for torrent in self._all:
            await torrent.close()


class _UploadOnlyFields:
    """A peer service: ``upload_only`` in our BEP 10 handshake for a torrent we only upload
    (BEP 21), so that peers that only upload too need not connect (not while it super-seeds:
    :attr:`Torrent.says_upload_only`)."""

    # No message: the peer manager asks it about none.
    message_types: ClassVar[tuple[type, ...]] = ()

    def __init__(self, find: Callable[[InfoHash], Torrent | None]) -> None:
        self._find = find

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        torrent = self._find(peer.info_hash)
        if torrent is not None and torrent.says_upload_only:
            return {"upload_only": True}
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to do."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Consumes nothing."""
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to forget."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """No timers."""


class _PeerOwners:
    """A peer service recording each peer's torrent as the manager takes it (the one its
    hash names then), before its :class:`~bip_peer.PeerAdded` is queued: the session routes a
    peer's events to that torrent only, and removes with a torrent every peer of it, also
    those whose arrival it has not routed yet. The session forgets a peer when its
    :class:`~bip_peer.PeerRemoved` is routed (its events come before it); so the record is
    bounded by the manager's peers and those leaving."""

    # No message: the peer manager asks it about none.
    message_types: ClassVar[tuple[type, ...]] = ()

    def __init__(self, find: Callable[[InfoHash], Torrent | None]) -> None:
        self._find = find
        self._owners: dict[Peer, Torrent | None] = {}

    def owner(self, peer: Peer) -> Torrent | None:
        """The torrent ``peer`` was taken for (``None``: its hash named none)."""
        return self._owners.get(peer)

    def peers_of(self, torrent: Torrent) -> list[Peer]:
        """The peers taken for ``torrent`` whose removal is not routed yet."""
        return [peer for peer, owner in self._owners.items() if owner is torrent]

    def forget(self, peer: Peer) -> None:
        """``peer``'s removal is routed: nothing more comes of it."""
        self._owners.pop(peer, None)

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """Nothing to add."""
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Record the torrent its hash names now."""
        self._owners[peer] = self._find(peer.info_hash)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Consumes nothing."""
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Kept until the session routes its :class:`~bip_peer.PeerRemoved` (it comes
        after this)."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """No timers."""


class _LateSink:
    """A :class:`~bip_handshake.PeerSink` that passes peers on to its ``target`` once set
    (and drops them before), named by the swarm id of the connection they came from (set by
    :class:`_SenderSwarm` just before PEX reads the message that lists them): a hybrid
    torrent's peer learnt in its v2 swarm is dialled in that swarm."""

    def __init__(self) -> None:
        self.target: PeerSink | None = None
        self.swarm_id: bytes | None = None

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        """To the target, if any."""
        if self.target is None:
            return
        swarm_id = self.swarm_id
        if (
            swarm_id is not None
            and isinstance(info_hash, InfoHash)
            and swarm_id in info_hash.swarm_ids()
        ):
            self.target.discovered(swarm_id, addresses, source)
        else:
            self.target.discovered(info_hash, addresses, source)


class _SenderSwarm:
    """A peer service placed just before PEX: tells ``sink`` the swarm id of each message's
    sender (PEX hands the sink only the torrent's hashes, and does so while it reads the
    message, synchronously)."""

    # The messages PEX reads, alone: the sink needs the sender's swarm for those only.
    message_types: ClassVar[tuple[type, ...]] = PeerExchange.message_types

    def __init__(self, sink: _LateSink) -> None:
        self._sink = sink

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """Nothing to add."""
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to do."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Note the sender's swarm; consumes nothing."""
        self._sink.swarm_id = peer.swarm_id
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to forget."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """No timers."""


def _new_peer_list(config: ClientConfig) -> PeerList:
    """A torrent's peer list, with the config's bounds. A dial whose outcome never comes
    back (a handshake that failed after the connect: only failed connects are reported) is
    taken as failed once every step of it could have timed out: both transports' connects,
    and the plaintext retry after a failed MSE handshake.

    Ports of one host kept follow ``max_peers_per_host`` (no cap without one: a swarm of
    one machine, as the demo's, shares 127.0.0.1), but never fewer than the list's default."""
    attempt = 2 * config.connect_timeout + config.handshake_timeout
    per_host = config.max_peers_per_host
    return PeerList(
        max_size=config.max_peerlist_size,
        max_per_host=None if per_host is None else max(DEFAULT_MAX_PER_HOST, per_host),
        dial_timeout=2 * attempt + 10.0,
    )


async def _close(handshake: CompletedHandshake) -> None:
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(handshake.stream)


def _trackers_of(source: Metainfo | MagnetLink) -> Sequence[Sequence[str]]:
    """The BEP 12 tiers of ``source``'s trackers: a magnet link's ``tr`` are a tier each (as
    libtorrent's ``parse_magnet_uri``): all are announced to, not one of them."""
    if isinstance(source, Metainfo):
        return source.trackers
    return [[url] for url in source.trackers]


def _tracker_binds(config: ClientConfig) -> tuple[str | None, str | None]:
    """The UDP tracker client's IPv4 and IPv6 local addresses (None: no socket of that
    family): ``tracker_bind``, else the first listen host of each family, as the peers are
    dialled from (``--bind 10.8.0.2 --bind fd00::2``: an IPv6-only tracker is reached too; an
    unspecified host, the any address of its family). A family with no listen host follows
    the other: the any address beside an unspecified host (or none at all, or host names
    only: the system picks), no socket beside a specific one. One ``--bind 10.8.0.2`` (a VPN's
    address) so keeps trackers from seeing an address of ours outside it, as libtorrent
    announces from its listen sockets only; and one host gives what it always gave.

    >>> _tracker_binds(ClientConfig(listen=(("fd00::2", 0), ("10.8.0.2", 0))))
    ('10.8.0.2', 'fd00::2')
    >>> _tracker_binds(ClientConfig(listen=(("10.8.0.2", 0),)))
    ('10.8.0.2', None)
    >>> _tracker_binds(ClientConfig(listen=(("0.0.0.0", 0),)))
    ('0.0.0.0', '::')

    Each host is read as :func:`~bip_handshake.local_addresses_by_family` reads a local
    address: an IPv4-mapped one is the IPv4 address it embeds, bound on the IPv4 socket (an
    IPv6 socket may be IPv6-only: the bind would fail), as the HTTP clients connect from it.

    >>> _tracker_binds(ClientConfig(tracker_bind="::ffff:10.8.0.2"))
    ('10.8.0.2', None)

    A host name first means "the system picks", as it did alone (a name is not resolved to
    bind to): the any address of each family, whatever follows it.

    >>> _tracker_binds(ClientConfig(listen=(("myhost.lan", 0), ("10.8.0.2", 0))))
    ('0.0.0.0', '::')
    """
    hosts = (
        [host for host, _port in config.listen]
        if config.tracker_bind is None
        else [config.tracker_bind]
    )
    # A name (a listen host's: ClientConfig refuses any other tracker_bind than an address)
    # reads as no family; first, it speaks for both: the system picks the source address.
    if hosts and not first_of_each_family(hosts[0]):
        return "0.0.0.0", "::"
    firsts = first_of_each_family(hosts)
    any_address = {4: "0.0.0.0", 6: "::"}
    binds: dict[int, str | None] = {}
    for version, other in ((4, 6), (6, 4)):
        if version in firsts:
            first = firsts[version]
            binds[version] = any_address[version] if first is None else str(first)
        elif other not in firsts or firsts[other] is None:
            binds[version] = any_address[version]
        else:
            binds[version] = None
    return binds[4], binds[6]


def _http_local_address(config: ClientConfig) -> tuple[str, ...] | None:
    """Where the HTTP clients (trackers, web seeds) connect from, as the UDP tracker client's
    sockets are bound (:func:`_tracker_binds`): in each family it has a socket of, from that
    socket's address (the system picks for the any address), in no other (a tracker lists the
    address it sees, a web server may allow one). None: either family, the system picks.

    >>> _http_local_address(ClientConfig(listen=(("10.8.0.2", 0), ("::", 0))))
    ('10.8.0.2', '::')
    >>> _http_local_address(ClientConfig(tracker_bind="::ffff:10.8.0.2"))
    ('10.8.0.2',)
    """
    binds = tuple(bind for bind in _tracker_binds(config) if bind is not None)
    if binds == ("0.0.0.0", "::"):
        return None
    return binds


def _dialer(config: ClientConfig) -> PeerDialer | None:
    """The session's dialer, unless the config brings its own ``dial``: TCP and (unless
    ``utp`` is off) uTP, in the configured order. TCP connects leave from the listen address
    of the peer's family when it is a specific one (``--bind 127.0.0.2``; with a host of
    each family, ``ClientConfig(listen=(("10.8.0.2", port), ("fd00::2", port)))``, IPv4
    peers from the first, IPv6 ones from the second), as libtorrent binds its connects to
    its ``outgoing_interfaces``: peers see us where we accept them, and a peer that refuses
    connections from its own address (ctorrent) can be reached. The choice per family is
    ours, on purpose (no connect fails for its source address): libtorrent rotates through
    its ``outgoing_interfaces`` whatever the peer's family (an entry of the other family
    fails that connect), and sets them apart from its ``listen_interfaces`` (qBittorrent
    fills both from its one interface setting), where bip dials from the listen addresses.
    The uTP sockets are added once bound.

    With a proxy for peers, TCP connects go through it (:class:`~bip_handshake.SocksDialer`,
    each connection to the proxy leaving from the listen address of the family it connects
    in) and uTP ones through its UDP relay (the socket :func:`open_session_utp` adds, bound
    to the listen address of its family too), in the same order, with the same fallback."""
    if config.dial is not None:
        return None
    proxy = _peer_proxy(config)
    local = _peer_local_addresses(config)
    return PeerDialer(
        prefer="utp" if config.utp and config.prefer_utp else "tcp",
        local_address=local,
        connect_tcp=None
        if proxy is None
        else SocksDialer(proxy, timeout=config.connect_timeout, local_address=local),
    )


def _peer_local_addresses(config: ClientConfig) -> tuple[str, ...]:
    """The addresses peer connections leave from: the first listen host of each IP family
    (:func:`.first_of_each_family`: an unspecified one speaks for its family, left out so
    that the dialers let the system pick there; an IPv4-mapped one is IPv4), in the order
    listed (``--bind 10.8.0.2 --bind fd00::2``, or ``ClientConfig(listen=...)`` with a host
    of each family). A host name is skipped (the system picks the source address).

    >>> _peer_local_addresses(ClientConfig(listen=(("fd00::2", 0), ("10.8.0.2", 0))))
    ('fd00::2', '10.8.0.2')
    """
    firsts = first_of_each_family(host for host, _port in config.listen)
    return tuple(str(address) for address in firsts.values() if address is not None)


def _peer_proxy(config: ClientConfig) -> ProxyConfig | None:
    """The proxy peers are dialled through (TCP, and uTP through its UDP relay; no
    holepunch), or None."""
    return config.proxy_settings if config.proxy_peer_connections else None


def _proxy_resolves_peer_names(config: ClientConfig) -> bool:
    """Whether peers are dialled through a proxy that resolves host names (``socks5h://``):
    the peers trackers name by host name are then dropped, never looked up here."""
    proxy = _peer_proxy(config)
    return proxy is not None and proxy.remote_dns


def _tracker_proxy(config: ClientConfig) -> ProxyConfig | None:
    """The proxy trackers are reached through, or None (web seeds follow the peers'): HTTP(S)
    ones over CONNECT, UDP ones through its UDP relay (UDP ASSOCIATE), as libtorrent's
    ``proxy_tracker_connections``; a proxy that refuses UDP fails each UDP announce."""
    return config.proxy_settings if config.proxy_tracker_connections else None


def _dht_proxied(dht: DhtLike | None) -> bool:
    """Whether ``dht`` talks through a proxy's UDP relay (bip_dht's ``DHT.proxy``; a DHT of
    the user's without the attribute is direct): nobody reaches its port but through the
    relay, and the nodes see the relay's address, not ours."""
    return dht is not None and getattr(dht, "proxy", None) is not None


def _dht_decided(dht: DhtLike | None) -> Callable[[], Mapping[Family, PeerAddress]] | None:
    """How to read the DHT's decided external address per family (bip_dht's
    ``DHT.node.external_addresses``, BEP 42 voting), or ``None`` without a DHT, or with one
    through a proxy (the nodes saw the relay's exit address: as the session's outbound peer
    votes through a proxy, no vote). A DHT of the user's that has no such attribute simply
    never votes."""
    if dht is None or _dht_proxied(dht):
        return None

    def read() -> Mapping[Family, PeerAddress]:
        decided = getattr(getattr(dht, "node", None), "external_addresses", None)
        if not isinstance(decided, Mapping):
            return {}
        return {
            family: address
            for family, address in decided.items()
            if family in (4, 6) and isinstance(address, PeerAddress)
        }

    return read


def _can_holepunch(config: ClientConfig, dialer: PeerDialer | None) -> bool:
    """Whether the session offers BEP 55: asked to, and able to dial uTP (a holepunch is two
    uTP dials at once; without uTP, or with a ``dial`` of the user's that the session cannot
    steer to uTP, it would only make peers dial us in vain). Never through a proxy: the hole
    is opened by datagrams from our own address, which a proxy is there to hide."""
    return (
        config.holepunch
        and config.utp
        and _peer_proxy(config) is None
        and dialer is not None
        and bool(dialer.utp_sockets)
    )


@asynccontextmanager
async def open_session(
    config: ClientConfig | None = None,
    *,
    dht: DhtLike | None = None,
    utp_router: UtpRouter | None = None,
    external_voter: ExternalIPVoter | None = None,
) -> AsyncIterator[Session]:
    """Run a client session for the duration of an ``async with`` block.

    With a ``dht`` (bip_dht's ``open_dht``, run by the caller, who may share it), every
    public torrent is looked up and announced there, we set the DHT reserved bit and tell
    peers our DHT port (BEP 5), and the DHT ports peers tell us are passed on to it. The
    session's IP filter (``ClientConfig.ip_filter``, :meth:`Session.set_ip_filter`) is set on
    the DHT too, for its nodes, as libtorrent does.

    With ``utp_router`` (the DHT's ``other_datagrams`` is ``utp_router.datagram_received``), uTP
    shares the DHT's socket when the DHT is bound to a listener's address and port, as
    libtorrent does: one UDP port for both. Otherwise uTP binds the listeners' port numbers
    over UDP itself (a port taken is logged and leaves uTP to outgoing connections).

    ``external_voter`` decides our external address from the votes (bip_handshake's
    ``ExternalIPVoter``; by default one with its defaults, which ignores local addresses: a
    test on loopback passes one with ``accept_local=True``). Its state is the session's to
    change from then on.

    Leaving the block saves every torrent's resume data (synced), says goodbye to the
    trackers, and closes every connection and file. From the moment it is left, every
    torrent's controls (:meth:`Torrent.pause`, :meth:`Torrent.resume`,
    :meth:`Torrent.move_storage`...) raise :class:`TorrentError`, also those of a torrent
    whose turn to close has not come yet.

    Raises:
        ListenError: a listening socket could not be opened (the port is taken...).
        OSError: the tracker client's socket could not be opened.
    """
    config = config if config is not None else ClientConfig()
    dialer = _dialer(config)
    peer_proxy = _peer_proxy(config)
    # Through a proxy, the dialer's TCP goes through it and its uTP through its UDP relay.
    dial: Dialer | None = config.dial if config.dial is not None else dialer
    if config.proxy is not None and dht is not None and not _dht_proxied(dht):
        # bip_dht's DHT.proxy says which way it goes: only a caller's own node is direct.
        logger.info("the DHT talks to its nodes directly: it was opened without the proxy")
    peer_id = config.peer_id if config.peer_id is not None else PeerId.generate()
    metadata = MetadataExchange()
    layers = PieceLayerExchange()
    session: Session | None = None
    holepunch: HolepunchPolicy | None = None

    def dial_failed(failure: DialFailure) -> None:
        if session is not None:
            session.connector.dial_failed(failure)
        if holepunch is not None:
            holepunch.dial_failed(failure)

    # PEX is built before the session (it is one of the manager's services); what it finds
    # goes to the session's peer lists once there is a session.
    pex_sink = _LateSink()

    def is_private(info_hash: InfoHash) -> bool:
        return session is not None and session.is_private(info_hash)

    def find(info_hash: InfoHash) -> Torrent | None:
        return None if session is None else session.find(info_hash)

    try:
        async with AsyncExitStack() as stack:
            disk = await stack.enter_async_context(open_disk_manager())
            handshaker = await stack.enter_async_context(
                open_handshaker(
                    peer_id=peer_id,
                    listen=config.listen,
                    extensions=OUR_EXTENSIONS
                    | (Extensions.DHT if dht is not None else Extensions.NONE),
                    encryption=config.encryption,
                    dial=dial,
                    connect_timeout=config.connect_timeout,
                    handshake_timeout=config.handshake_timeout,
                    on_dial_failed=dial_failed,
                    ip_filter=config.ip_filter,
                    max_inbound=config.max_inbound,
                    max_inbound_per_host=config.max_inbound_per_host,
                    # Each torrent's PeerList is the session's per-host policy: it caps what
                    # sources add per host and leaves uncapped on purpose the user's peers,
                    # the ports peers say they listen on and holepunch dials. A second bound
                    # here would hold those back (a third user peer on one host waiting out
                    # the reconnect time), the sources' floods being capped already.
                    max_outbound_per_host=None,
                )
            )
            utp_sockets: tuple[UtpSocket, ...] = ()
            if config.utp:
                # Before the peer manager, so closed after it: its streams end first.
                utp_sockets = await stack.enter_async_context(
                    open_session_utp(
                        handshaker,
                        config.utp_config,
                        dialer=dialer,
                        dht=dht,
                        router=utp_router,
                        # Both families: an IPv4 socket alone never reaches IPv6 peers.
                        dial_from=("0.0.0.0", "::"),
                        # Dials through its UDP relay only; the listeners still accept.
                        proxy=peer_proxy,
                        proxy_timeout=config.connect_timeout,
                        # The relay's host is the one the proxy relays for: --bind's of
                        # the relay's family.
                        proxy_local=_peer_local_addresses(config),
                    )
                )
            addresses = handshaker.listen_addresses
            pex = PeerExchange(pex_sink, our_addresses=addresses, is_private=is_private)
            # Where peers reach us (TCP listeners, uTP sockets): fixed while the session runs.
            listening = (*addresses, *(utp.local_address for utp in utp_sockets))
            external = ExternalAddresses(
                external_voter if external_voter is not None else ExternalIPVoter(),
                ports=(address.port for address in listening),
                users=[pex],
                dht_addresses=_dht_decided(dht),
                # Peers we dial through a proxy see its address, not ours.
                outbound_peer_votes=peer_proxy is None,
            )
            # Before the peer manager, so the mappings are deleted once every peer is gone.
            listen_ports = {address.port for address in addresses}
            tcp_mappable = mappable_ports(addresses)
            # The port whose mapping we tell: an IPv4 listener's (a "::" one listed first
            # takes no IPv4, and NAT-PMP and UPnP map IPv4 only).
            told = tcp_mappable[:1] or [address.port for address in addresses[:1]] or [0]
            udp_sockets = (
                # Those accepting peers: on a TCP listener's port number.
                *(
                    utp.local_address
                    for utp in utp_sockets
                    if utp.local_address.port in listen_ports
                ),
                # Not a proxied DHT's: only its relay reaches it (libtorrent maps no proxy socket).
                *(dht.addresses if dht is not None and not _dht_proxied(dht) else ()),
            )
            port_mapping = await stack.enter_async_context(
                open_session_port_mapping(
                    config,
                    tcp_port=told[0],
                    tcp_ports=tcp_mappable,
                    udp_ports=mappable_ports(udp_sockets),
                    # IPv6 sockets: pinholes in the IPv6 router's firewall (PCP).
                    tcp_ports6=pinhole_ports(addresses),
                    udp_ports6=pinhole_ports(udp_sockets),
                    external=external,
                )
            )
            lsd_sink = _LateSink()

            def lsd_found(swarm_id: bytes, peer: PeerAddress) -> None:
                # A magnet that turned out private is withdrawn within a few seconds: until
                # then, what LSD hears of it is dropped here (BEP 27).
                torrent = None if session is None else session.find(swarm_id)
                if torrent is not None and not (torrent.info is not None and torrent.info.private):
                    lsd_sink.discovered(swarm_id, [peer], "lsd")

            lsd = await stack.enter_async_context(open_session_lsd(config, addresses, lsd_found))

            manager = await stack.enter_async_context(
                open_peer_manager(
                    PeerManagerConfig(
                        max_peers=config.max_peers,
                        max_peers_per_host=config.max_peers_per_host,
                        send_queue_size=_SEND_QUEUE,
                        client_version=f"bip {__version__}",
                        listen_port=addresses[0].port if addresses else None,
                        services=[
                            metadata,
                            layers,
                            _SenderSwarm(pex_sink),
                            pex,
                            _UploadOnlyFields(find),
                            external,
                            # Last: its "p" (the mapped port) wins over the manager's own.
                            port_mapping,
                        ],
                        upload_rate_limit=config.upload_rate_limit,
                        download_rate_limit=config.download_rate_limit,
                        limit_local_peers=config.limit_local_peers,
                    )
                )
            )
            if _can_holepunch(config, dialer):
                assert dialer is not None
                holepunch = HolepunchPolicy(
                    handshaker=handshaker,
                    pex=pex,
                    dialer=dialer,
                    our_addresses=listening,
                    refuses=lambda info_hash, address: (
                        (torrent := find(info_hash)) is not None and torrent.refuses(address)
                    ),
                )
                # No peer yet: every one will hear ut_holepunch in our extended handshake.
                manager.add_service(holepunch.service)
                manager.add_service(holepunch)
                holepunch.attach(manager)
                external.add_user(holepunch.service)
            trackers = http_trackers = None
            if config.trackers:
                bind_v4, bind_v6 = _tracker_binds(config)
                trackers = await stack.enter_async_context(
                    open_tracker_client(
                        bind_v4=bind_v4,
                        bind_v6=bind_v6,
                        proxy=_tracker_proxy(config),
                        proxy_timeout=config.connect_timeout,
                    )
                )
                http_trackers = await stack.enter_async_context(
                    HttpTrackerClient(
                        local_address=_http_local_address(config),
                        ssrf_mitigation=config.ssrf_mitigation,
                        allow_idna=config.allow_idna,
                        proxy=_tracker_proxy(config),
                        max_concurrent=config.max_concurrent_http_announces,
                    )
                )
            if dht is not None and config.ip_filter is not None:
                dht.set_ip_filter(config.ip_filter)
            nursery = await stack.enter_async_context(trio.open_nursery())
            session = Session(
                nursery,
                config,
                disk=disk,
                handshaker=handshaker,
                manager=manager,
                metadata=metadata,
                layers=layers,
                pex=pex,
                trackers=trackers,
                peer_id=peer_id,
                dht=dht,
                http_trackers=http_trackers,
                dialer=dialer,
                utp_sockets=utp_sockets,
                holepunch=holepunch,
                external=external,
                port_mapping=port_mapping,
            )
            pex_sink.target = lsd_sink.target = session.connector
            if lsd:
                session.lsd = lsd
                session.add_source(lambda: LsdPeers(*lsd))
            nursery.start_soon(session.connector.run, name="bip connector")
            nursery.start_soon(session._accept, name="bip accept")
            nursery.start_soon(session._route_peers, name="bip peers")
            nursery.start_soon(session._route_disk, name="bip disk")
            nursery.start_soon(session._tick, name="bip ticker")
            nursery.start_soon(session._run_queue, name="bip queue")
            try:
                yield session
            finally:
                with trio.CancelScope(shield=True):
                    await session._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our tasks raise nothing but bugs: unwrap the body's own exception, as the
        # libraries' context managers do.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
