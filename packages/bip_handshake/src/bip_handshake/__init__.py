"""bip_handshake: meeting BitTorrent peers.

Sans-IO cores for the front door of a BitTorrent client: peer ids and the client
they name, compact peer and node addresses (trackers, the DHT, PEX), the reserved
extension bits, the BEP 3 / BEP 52 handshake for both roles, and MSE/PE
encryption (768-bit Diffie-Hellman, RC4) with its three policies; uTP (BEP 29),
a sans-IO connection core and its trio socket and stream; and the trio
``Handshaker`` that listens, dials what discovery sources report (``PeerSink``),
encrypts as its ``EncryptionPolicy`` says, and hands over completed handshakes.
"""

import logging

from ._compact import (
    DEFAULT_COMPACT_LIMIT,
    CompactError,
    Family,
    NodeInfo,
    PeerAddress,
    encode_compact_nodes,
    encode_compact_peers,
    parse_compact_nodes,
    parse_compact_peers,
)
from ._dialers import (
    DEFAULT_FIRST_SHARE,
    DEFAULT_FIRST_TIMEOUT,
    MAX_UTP_HINTS,
    DialerStatistics,
    PeerDialer,
    Transport,
)
from ._errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from ._extensions import Extensions
from ._external import (
    DEFAULT_EXTERNAL_MAX_CANDIDATES,
    DEFAULT_EXTERNAL_MAX_VOTERS,
    DEFAULT_EXTERNAL_MIN_VOTERS,
    DEFAULT_EXTERNAL_ROUND_TIMEOUT,
    DEFAULT_EXTERNAL_THRESHOLD,
    DEFAULT_VOTE_WEIGHTS,
    ExternalIPStatistics,
    ExternalIPVoter,
    VoteSource,
    is_global_address,
)
from ._fragmentation import FragmentControl
from ._handshake import (
    DEFAULT_MAX_TRAILING,
    HANDSHAKE_LENGTH,
    NEED_DATA,
    PAUSED,
    PROTOCOL_HEADER,
    Handshake,
    HandshakeComplete,
    HandshakeConnection,
    HandshakeEvent,
    HandshakeState,
    InfoHashReceived,
    Pending,
    Role,
)
from ._handshaker import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_QUEUED,
    CompletedHandshake,
    Dialer,
    DialFailure,
    DialFailureCallback,
    DialFailureReason,
    Direction,
    EncryptionMethod,
    HandshakeFilters,
    Handshaker,
    HandshakerStatistics,
    HasTransport,
    ListenError,
    PeerSink,
    open_handshaker,
)
from ._ip_filter import (
    DEFAULT_MAX_FILTER_LINE,
    DEFAULT_MAX_FILTER_RANGES,
    IPFilter,
    IPFilterError,
    IPFilterFormat,
    IPRange,
    ParsedIPFilter,
    parse_ip_filter,
)
from ._mse import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    EncryptionPolicy,
    MSEEstablished,
    MSEEvent,
    MSEInitiator,
    MSEReceiver,
    SkeyTable,
)
from ._mse_stream import MSEStream
from ._peer_id import DEFAULT_PEER_ID_PREFIX, ClientInfo, PeerId, PeerIdError, azureus_prefix
from ._utp_config import MIN_DATAGRAM, PACKET_OVERHEAD, UtpConfig, UtpConnectError, UtpError
from ._utp_connection import (
    PADDING_EXTENSION,
    UtpConnection,
    UtpConnectionStatistics,
    UtpReceiveBudget,
    UtpState,
    is_mtu_probe,
)
from ._utp_packet import UtpPacket, UtpPacketError, UtpPacketType
from ._utp_socket import UtpSocket, UtpStatistics, open_utp_over, open_utp_socket
from ._utp_stream import UtpStream

__all__ = [
    "CRYPTO_PLAINTEXT",
    "CRYPTO_RC4",
    "DEFAULT_COMPACT_LIMIT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_EXTERNAL_MAX_CANDIDATES",
    "DEFAULT_EXTERNAL_MAX_VOTERS",
    "DEFAULT_EXTERNAL_MIN_VOTERS",
    "DEFAULT_EXTERNAL_ROUND_TIMEOUT",
    "DEFAULT_EXTERNAL_THRESHOLD",
    "DEFAULT_FIRST_SHARE",
    "DEFAULT_FIRST_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_FILTER_LINE",
    "DEFAULT_MAX_FILTER_RANGES",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_TRAILING",
    "DEFAULT_PEER_ID_PREFIX",
    "DEFAULT_VOTE_WEIGHTS",
    "HANDSHAKE_LENGTH",
    "MAX_UTP_HINTS",
    "MIN_DATAGRAM",
    "NEED_DATA",
    "PACKET_OVERHEAD",
    "PADDING_EXTENSION",
    "PAUSED",
    "PROTOCOL_HEADER",
    "ClientInfo",
    "CompactError",
    "CompletedHandshake",
    "DialFailure",
    "DialFailureCallback",
    "DialFailureReason",
    "Dialer",
    "DialerStatistics",
    "Direction",
    "EncryptionMethod",
    "EncryptionPolicy",
    "Extensions",
    "ExternalIPStatistics",
    "ExternalIPVoter",
    "Family",
    "FragmentControl",
    "Handshake",
    "HandshakeComplete",
    "HandshakeConnection",
    "HandshakeError",
    "HandshakeEvent",
    "HandshakeFilters",
    "HandshakeState",
    "Handshaker",
    "HandshakerStatistics",
    "HasTransport",
    "IPFilter",
    "IPFilterError",
    "IPFilterFormat",
    "IPRange",
    "InfoHashReceived",
    "ListenError",
    "LocalProtocolError",
    "MSEEstablished",
    "MSEEvent",
    "MSEInitiator",
    "MSEReceiver",
    "MSEStream",
    "NodeInfo",
    "ParsedIPFilter",
    "PeerAddress",
    "PeerDialer",
    "PeerId",
    "PeerIdError",
    "PeerSink",
    "Pending",
    "RemoteProtocolError",
    "Role",
    "SkeyTable",
    "Transport",
    "UtpConfig",
    "UtpConnectError",
    "UtpConnection",
    "UtpConnectionStatistics",
    "UtpError",
    "UtpPacket",
    "UtpPacketError",
    "UtpPacketType",
    "UtpReceiveBudget",
    "UtpSocket",
    "UtpState",
    "UtpStatistics",
    "UtpStream",
    "VoteSource",
    "azureus_prefix",
    "encode_compact_nodes",
    "encode_compact_peers",
    "is_global_address",
    "is_mtu_probe",
    "open_handshaker",
    "open_utp_over",
    "open_utp_socket",
    "parse_compact_nodes",
    "parse_compact_peers",
    "parse_ip_filter",
]

__version__ = "0.1.0"

# The application decides where log records go; without this, Python's last-resort handler
# would print our warnings to stderr in an application that configured no logging at all.
logging.getLogger("bip_handshake").addHandler(logging.NullHandler())
