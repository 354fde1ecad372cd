"""bip_dht: a complete, hardened Mainline DHT.

Start a node with :func:`open_dht` and use the :class:`DHT` it gives: find peers
(:meth:`DHT.get_peers`, yielding them as they arrive, and feeding a
:class:`~bip_handshake.PeerSink` if you give one; :meth:`DHT.keep_finding` for as long as a
torrent runs), announce, store and fetch BEP 44
items, sample info-hashes (BEP 51), and read :meth:`DHT.statistics`. Bootstrap nodes are
always the caller's: no public router is contacted unless you name it.

Underneath is :class:`DHTNode`, the sans-IO node (datagrams in, datagrams out, time passed
in): transactions, bootstrap from addresses of unknown id, table maintenance, lookups,
announces and puts, BEP 42 node ids from the voted external address, read-only mode, IPv4
and IPv6. It is built from parts usable on their own:

- the KRPC codec (:func:`decode_message`, one frozen dataclass per query, a generic
  :class:`Response` and :class:`ErrorReply`) for BEP 5 with BEP 32 (IPv6), BEP 33
  (scrapes), BEP 42 (``ip``), BEP 43 (read-only), BEP 44 (get/put) and BEP 51
  (sample_infohashes), bounded and tolerant;
- :class:`NodeId` with BEP 42 address-bound ids, and the Kademlia
  :class:`RoutingTable` (buckets of 8, node states, replacement caches, refresh,
  one node per IP, save and load);
- the iterative :class:`Lookup` and the serving side, :class:`QueryHandler`, with per-IP
  :class:`RateLimiter`;
- storage: write tokens (:class:`TokenManager`), announced peers (:class:`PeerStore`),
  BEP 44 items (:class:`ImmutableItem`, :class:`MutableItem`, :class:`ItemStore`) and
  BEP 33 bloom filters (:class:`ScrapeBloom`), every one bounded in memory.

:mod:`bip_dht.simulator` runs thousands of real nodes on a virtual clock.
"""

import logging

from ._bloom import (
    BLOOM_BITS,
    BLOOM_BYTES,
    BLOOM_HASHES,
    ScrapeBloom,
)
from ._errors import (
    DHTError,
    ItemError,
    KRPCError,
    LocalProtocolError,
)
from ._items import (
    DEFAULT_ITEM_LIFETIME,
    DEFAULT_MAX_ITEMS,
    MAX_SALT_SIZE,
    MAX_SEQ,
    MAX_VALUE_SIZE,
    ImmutableItem,
    ItemProblem,
    ItemRejectedError,
    ItemStore,
    MutableItem,
    immutable_target,
    mutable_target,
    sign,
    signed_buffer,
    verify_signature,
)
from ._krpc import (
    DEFAULT_LIMITS,
    WANT_N4,
    WANT_N6,
    AnnouncePeer,
    ErrorCode,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    KRPCLimits,
    KRPCQueryError,
    Message,
    Ping,
    Put,
    Query,
    Response,
    SampleInfohashes,
    UnknownQuery,
    decode_message,
    wanted_families,
)
from ._lookup import (
    DEFAULT_QUERY_TIMEOUT,
    DEFAULT_SLOW_AFTER,
    Lookup,
    LookupKind,
    LookupNode,
    LookupResult,
)
from ._mutable_torrent import INFO_HASH_KEY, MutableTorrent, mutable_torrent_value
from ._node import MAX_COUNTED_ERROR_CODES, OTHER_ERROR_CODES, DHTNode
from ._node_config import DEFAULT_VERSION, DHTConfig
from ._node_events import (
    AnnounceFinished,
    DHTEvent,
    LookupFinished,
    NodeIdChanged,
    PeersFound,
    PingFinished,
    PutFinished,
    SamplesFound,
)
from ._node_id import (
    NODE_ID_BITS,
    NODE_ID_BYTES,
    NodeId,
    crc32c,
    is_bep42_exempt,
)
from ._node_voting import ExternalAddressVoter
from ._peer_store import (
    DEFAULT_MAX_HASHES,
    DEFAULT_MAX_PEERS,
    DEFAULT_MAX_PEERS_PER_HASH,
    DEFAULT_PEER_TTL,
    MAX_PORTS_PER_IP,
    PeerStore,
    max_values,
)
from ._ratelimit import (
    DEFAULT_QUERY_BURST,
    DEFAULT_QUERY_RATE,
    DEFAULT_RATE_LIMITED_HOSTS,
    RateLimiter,
)
from ._routing import (
    BUCKET_SIZE,
    GOOD_INTERVAL,
    MAX_FAILURES,
    Admission,
    NodeState,
    RefreshQuery,
    RefreshTarget,
    RoutingEntry,
    RoutingStateError,
    RoutingTable,
    bep42_filter,
)
from ._serve import (
    DEFAULT_SAMPLE_COUNT,
    DEFAULT_SAMPLE_INTERVAL,
    MAX_COUNTED_METHODS,
    MAX_REPLY_SIZE,
    MAX_SAMPLE_COUNT,
    MAX_SAMPLE_INTERVAL,
    OTHER_METHODS,
    QueryHandler,
    ServeStatistics,
)
from ._shell import DHT, DHTBusyError, PeerSearch, open_dht
from ._shell_periodic import DEFAULT_FIND_INTERVAL
from ._shell_sockets import AddressLike, DHTSocketError
from ._stats import DHTStatistics
from ._tokens import (
    DEFAULT_ROTATE_INTERVAL,
    DEFAULT_TOKEN_SIZE,
    TokenManager,
)

__all__ = [
    "BLOOM_BITS",
    "BLOOM_BYTES",
    "BLOOM_HASHES",
    "BUCKET_SIZE",
    "DEFAULT_FIND_INTERVAL",
    "DEFAULT_ITEM_LIFETIME",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_HASHES",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_PEERS_PER_HASH",
    "DEFAULT_PEER_TTL",
    "DEFAULT_QUERY_BURST",
    "DEFAULT_QUERY_RATE",
    "DEFAULT_QUERY_TIMEOUT",
    "DEFAULT_RATE_LIMITED_HOSTS",
    "DEFAULT_ROTATE_INTERVAL",
    "DEFAULT_SAMPLE_COUNT",
    "DEFAULT_SAMPLE_INTERVAL",
    "DEFAULT_SLOW_AFTER",
    "DEFAULT_TOKEN_SIZE",
    "DEFAULT_VERSION",
    "DHT",
    "GOOD_INTERVAL",
    "INFO_HASH_KEY",
    "MAX_COUNTED_ERROR_CODES",
    "MAX_COUNTED_METHODS",
    "MAX_FAILURES",
    "MAX_PORTS_PER_IP",
    "MAX_REPLY_SIZE",
    "MAX_SALT_SIZE",
    "MAX_SAMPLE_COUNT",
    "MAX_SAMPLE_INTERVAL",
    "MAX_SEQ",
    "MAX_VALUE_SIZE",
    "NODE_ID_BITS",
    "NODE_ID_BYTES",
    "OTHER_ERROR_CODES",
    "OTHER_METHODS",
    "WANT_N4",
    "WANT_N6",
    "AddressLike",
    "Admission",
    "AnnounceFinished",
    "AnnouncePeer",
    "DHTBusyError",
    "DHTConfig",
    "DHTError",
    "DHTEvent",
    "DHTNode",
    "DHTSocketError",
    "DHTStatistics",
    "ErrorCode",
    "ErrorReply",
    "ExternalAddressVoter",
    "FindNode",
    "Get",
    "GetPeers",
    "ImmutableItem",
    "ItemError",
    "ItemProblem",
    "ItemRejectedError",
    "ItemStore",
    "KRPCError",
    "KRPCLimits",
    "KRPCQueryError",
    "LocalProtocolError",
    "Lookup",
    "LookupFinished",
    "LookupKind",
    "LookupNode",
    "LookupResult",
    "Message",
    "MutableItem",
    "MutableTorrent",
    "NodeId",
    "NodeIdChanged",
    "NodeState",
    "PeerSearch",
    "PeerStore",
    "PeersFound",
    "Ping",
    "PingFinished",
    "Put",
    "PutFinished",
    "Query",
    "QueryHandler",
    "RateLimiter",
    "RefreshQuery",
    "RefreshTarget",
    "Response",
    "RoutingEntry",
    "RoutingStateError",
    "RoutingTable",
    "SampleInfohashes",
    "SamplesFound",
    "ScrapeBloom",
    "ServeStatistics",
    "TokenManager",
    "UnknownQuery",
    "bep42_filter",
    "crc32c",
    "decode_message",
    "immutable_target",
    "is_bep42_exempt",
    "max_values",
    "mutable_target",
    "mutable_torrent_value",
    "open_dht",
    "sign",
    "signed_buffer",
    "verify_signature",
    "wanted_families",
]

__version__ = "0.1.0"

# The application decides where log records go; without this, Python's last-resort handler
# would print our warnings to stderr in an application that configured no logging at all.
logging.getLogger("bip_dht").addHandler(logging.NullHandler())
