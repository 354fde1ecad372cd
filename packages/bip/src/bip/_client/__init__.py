"""The client engine behind ``bip download`` and ``bip seed``: the eight libraries composed.

A :class:`Session` (:func:`open_session`) owns the shared services (disk, handshaker, peer
manager with metadata and piece layer exchanges and PEX, UDP and HTTP(S) tracker clients, a
web seed client) and routes between them; each :class:`Torrent` added to it fetches its
metadata if needed (and a v2-only torrent's piece layers), checks its storage, downloads with
a bip_select brain and serves its pieces, saving resume data as it goes. Peers come from
:class:`PeerSource` tasks (the user's peers, trackers, a DHT) and from PEX through the
:class:`~bip_handshake.PeerSink` interface into each torrent's peer list, which the
session's :class:`Connector` dials from, best first, while under ``max_peers``; web seeds
(BEP 19) join the brain as peers that have every piece. Peers behind NATs are reached by
BEP 55 holepunching (:class:`HolepunchPolicy`) when uTP is on.

>>> async def main(torrent, directory):  # doctest: +SKIP
...     async with open_session(ClientConfig(listen=(("127.0.0.1", 0),))) as session:
...         download = await session.add_torrent(torrent, TorrentOptions(directory))
...         await download.wait_complete()
"""

from ._config import (
    DEFAULT_AUTO_MANAGE_INTERVAL,
    DEFAULT_CONNECTION_SPEED,
    DEFAULT_DHT_INTERVAL,
    DEFAULT_FILE_PRIORITY,
    DEFAULT_LISTEN_PORT,
    DEFAULT_MAX_PEERLIST_SIZE,
    DEFAULT_MAX_PEERS,
    DEFAULT_MAX_PEERS_PER_HOST,
    DEFAULT_METADATA_TIMEOUT,
    DEFAULT_REDIAL_INTERVAL,
    DEFAULT_RESUME_INTERVAL,
    MAX_FILE_PRIORITY,
    MIN_FILE_PRIORITY,
    RESUME_DIRECTORY,
    ClientConfig,
    TorrentOptions,
)
from ._connector import Connector, ConnectorTorrent
from ._discovery import (
    DhtLike,
    DhtPeers,
    DiscoveryTarget,
    PeerSource,
    TrackerAnnouncer,
    UserPeers,
)
from ._holepunch import HolepunchCounts, HolepunchPolicy, HolepunchPolicyStatistics
from ._http_tracker import HttpAnnounceResult, HttpTrackerClient
from ._http_tracker_errors import (
    HttpTrackerError,
    MalformedTrackerResponseError,
    TrackerBlockedError,
)
from ._move import MoveFlags
from ._port_mapping import SessionPortMapping
from ._queue import QueueDecision, QueuedTorrent, QueueError, QueueKind, QueueLimits, TorrentQueue
from ._resume import ResumeStore
from ._session import OUR_EXTENSIONS, REASON_DUPLICATE, REASON_IP_FILTER, Session, open_session
from ._source import (
    SourceError,
    TorrentSource,
    load_source,
    parse_file_selection,
    parse_peer,
    resolve_peers,
)
from ._status import TorrentPhase, TorrentStatus
from ._swarm import Swarm
from ._torrent import REASON_PAUSED, REASON_RECHECK, REASON_REMOVED, Torrent, TorrentError
from ._upload import (
    RATE_WINDOW,
    SEND_LOW_WATERMARK,
    SEND_WATERMARK,
    SEND_WATERMARK_FACTOR,
    UPLOAD_WORKERS,
    Uploader,
)
from ._views import PeerInfo
from ._webseed import WebSeed, WebSeedState
from ._webseed_http import (
    WebSeedBlockedError,
    WebSeedClient,
    WebSeedError,
    WebSeedFileMissingError,
)

__all__ = [
    "DEFAULT_AUTO_MANAGE_INTERVAL",
    "DEFAULT_CONNECTION_SPEED",
    "DEFAULT_DHT_INTERVAL",
    "DEFAULT_FILE_PRIORITY",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_MAX_PEERLIST_SIZE",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_PEERS_PER_HOST",
    "DEFAULT_METADATA_TIMEOUT",
    "DEFAULT_REDIAL_INTERVAL",
    "DEFAULT_RESUME_INTERVAL",
    "MAX_FILE_PRIORITY",
    "MIN_FILE_PRIORITY",
    "OUR_EXTENSIONS",
    "RATE_WINDOW",
    "REASON_DUPLICATE",
    "REASON_IP_FILTER",
    "REASON_PAUSED",
    "REASON_RECHECK",
    "REASON_REMOVED",
    "RESUME_DIRECTORY",
    "SEND_LOW_WATERMARK",
    "SEND_WATERMARK",
    "SEND_WATERMARK_FACTOR",
    "UPLOAD_WORKERS",
    "ClientConfig",
    "Connector",
    "ConnectorTorrent",
    "DhtLike",
    "DhtPeers",
    "DiscoveryTarget",
    "HolepunchCounts",
    "HolepunchPolicy",
    "HolepunchPolicyStatistics",
    "HttpAnnounceResult",
    "HttpTrackerClient",
    "HttpTrackerError",
    "MalformedTrackerResponseError",
    "MoveFlags",
    "PeerInfo",
    "PeerSource",
    "QueueDecision",
    "QueueError",
    "QueueKind",
    "QueueLimits",
    "QueuedTorrent",
    "ResumeStore",
    "Session",
    "SessionPortMapping",
    "SourceError",
    "Swarm",
    "Torrent",
    "TorrentError",
    "TorrentOptions",
    "TorrentPhase",
    "TorrentQueue",
    "TorrentSource",
    "TorrentStatus",
    "TrackerAnnouncer",
    "TrackerBlockedError",
    "Uploader",
    "UserPeers",
    "WebSeed",
    "WebSeedBlockedError",
    "WebSeedClient",
    "WebSeedError",
    "WebSeedFileMissingError",
    "WebSeedState",
    "load_source",
    "open_session",
    "parse_file_selection",
    "parse_peer",
    "resolve_peers",
]
