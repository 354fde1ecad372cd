"""bip_utracker: UDP BitTorrent trackers (BEP 15, BEP 41).

A sans-IO codec for every packet (IPv4 and IPv6) with BEP 41 options; a client
core (connection ids cached for a minute, retransmission after 15 * 2**n
seconds, transaction ids and sources checked) and the trio
:class:`TrackerClient` around it; a server core (stateless keyed-hash
connection ids, a bounded :class:`SwarmStore`, allow and deny lists, per-address
rate limits, bounded replies) and the trio :class:`TrackerServer` around it; and
:class:`Announcer`, which keeps a torrent announced to one tracker for as long as it runs
(through :class:`TrackerClient`, or any other :class:`AnnounceClient`, such as an HTTP one).
"""

import logging

from ._announcer import (
    DEFAULT_ANNOUNCE_NOW_INTERVAL,
    DEFAULT_ANNOUNCE_TIMEOUT,
    DEFAULT_MAX_ANNOUNCE_INTERVAL,
    DEFAULT_MIN_ANNOUNCE_INTERVAL,
    DEFAULT_RETRY_DELAY,
    DEFAULT_STOPPED_TIMEOUT,
    MAX_RETRY_IN,
    AnnounceClient,
    AnnounceProgress,
    Announcer,
    AnnouncerStatus,
)
from ._client import (
    DEFAULT_PROXY_TIMEOUT,
    TrackerClient,
    TrackerTarget,
    open_tracker_client,
)
from ._client_core import (
    DEFAULT_CONNECTION_LIFETIME,
    DEFAULT_MAX_REQUESTS_IN_FLIGHT,
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_RETRANSMIT_TIMEOUT,
    MAX_ERROR_MESSAGE,
    MAX_REQUEST_SIZE,
    AnnounceParams,
    AnnounceResult,
    ClientStatistics,
    RequestFailed,
    RequestId,
    ScrapeResult,
    TrackerAddress,
    TrackerClientCore,
    TrackerEvent,
)
from ._codec import (
    ANNOUNCE_REQUEST_SIZE,
    MAX_SCRAPE_HASHES,
    PROTOCOL_ID,
    Action,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Request,
    Response,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_request,
    decode_response,
)
from ._connection_ids import (
    DEFAULT_CONNECTION_ID_WINDOW,
    ConnectionIds,
)
from ._errors import (
    LocalProtocolError,
    MalformedPacketError,
    TrackerError,
    TrackerRejectedError,
    TrackerTimeoutError,
)
from ._host_name import MAX_HOST_NAME, is_host_name
from ._options import (
    MAX_OPTION_DATA,
    MAX_OPTIONS,
    Option,
    OptionType,
    encode_options,
    options_are_well_formed,
    parse_options,
    url_data_of,
    url_data_options,
)
from ._server import (
    RECEIVE_BATCH,
    TrackerServer,
    serve_tracker,
)
from ._server_core import (
    DEFAULT_MAX_RESPONSE_SIZE,
    MIN_RESPONSE_SIZE,
    Refusal,
    ServerConfig,
    ServerStatistics,
    TrackerHandler,
    TrackerServerCore,
)
from ._swarm import (
    DEFAULT_MAX_PEERS,
    DEFAULT_MAX_PEERS_PER_HOST,
    DEFAULT_MAX_PEERS_PER_SWARM,
    DEFAULT_MAX_SWARMS,
    DEFAULT_PEER_LIFETIME,
    AnnounceAnswer,
    SwarmStatistics,
    SwarmStore,
)
from ._url import (
    MAX_SHOWN_LENGTH,
    MAX_URL_LENGTH,
    SECRET_RUN_LENGTH,
    TrackerUrl,
    is_secret_segment,
    parse_tracker_url,
    shown_path,
    shown_url,
)

__all__ = [
    "ANNOUNCE_REQUEST_SIZE",
    "DEFAULT_ANNOUNCE_NOW_INTERVAL",
    "DEFAULT_ANNOUNCE_TIMEOUT",
    "DEFAULT_CONNECTION_ID_WINDOW",
    "DEFAULT_CONNECTION_LIFETIME",
    "DEFAULT_MAX_ANNOUNCE_INTERVAL",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_PEERS_PER_HOST",
    "DEFAULT_MAX_PEERS_PER_SWARM",
    "DEFAULT_MAX_REQUESTS_IN_FLIGHT",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_MAX_RETRANSMITS",
    "DEFAULT_MAX_SWARMS",
    "DEFAULT_MIN_ANNOUNCE_INTERVAL",
    "DEFAULT_PEER_LIFETIME",
    "DEFAULT_PROXY_TIMEOUT",
    "DEFAULT_RETRANSMIT_TIMEOUT",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_STOPPED_TIMEOUT",
    "MAX_ERROR_MESSAGE",
    "MAX_HOST_NAME",
    "MAX_OPTIONS",
    "MAX_OPTION_DATA",
    "MAX_REQUEST_SIZE",
    "MAX_RETRY_IN",
    "MAX_SCRAPE_HASHES",
    "MAX_SHOWN_LENGTH",
    "MAX_URL_LENGTH",
    "MIN_RESPONSE_SIZE",
    "PROTOCOL_ID",
    "RECEIVE_BATCH",
    "SECRET_RUN_LENGTH",
    "Action",
    "AnnounceAnswer",
    "AnnounceClient",
    "AnnounceEvent",
    "AnnounceParams",
    "AnnounceProgress",
    "AnnounceRequest",
    "AnnounceResponse",
    "AnnounceResult",
    "Announcer",
    "AnnouncerStatus",
    "ClientStatistics",
    "ConnectRequest",
    "ConnectResponse",
    "ConnectionIds",
    "ErrorResponse",
    "LocalProtocolError",
    "MalformedPacketError",
    "Option",
    "OptionType",
    "Refusal",
    "Request",
    "RequestFailed",
    "RequestId",
    "Response",
    "ScrapeRequest",
    "ScrapeResponse",
    "ScrapeResult",
    "ScrapeStats",
    "ServerConfig",
    "ServerStatistics",
    "SwarmStatistics",
    "SwarmStore",
    "TrackerAddress",
    "TrackerClient",
    "TrackerClientCore",
    "TrackerError",
    "TrackerEvent",
    "TrackerHandler",
    "TrackerRejectedError",
    "TrackerServer",
    "TrackerServerCore",
    "TrackerTarget",
    "TrackerTimeoutError",
    "TrackerUrl",
    "decode_request",
    "decode_response",
    "encode_options",
    "is_host_name",
    "is_secret_segment",
    "open_tracker_client",
    "options_are_well_formed",
    "parse_options",
    "parse_tracker_url",
    "serve_tracker",
    "shown_path",
    "shown_url",
    "url_data_of",
    "url_data_options",
]

__version__ = "0.1.0"

# The application decides where log records go; without this, Python's last-resort handler
# would print our warnings to stderr in an application that configured no logging at all.
logging.getLogger("bip_utracker").addHandler(logging.NullHandler())
