"""bip_select: the swarm brain of a BitTorrent client.

Sans-IO strategies that a client composes, fed inputs (:class:`PeerJoined`,
:class:`PeerHave`, :class:`BlockReceived`, :class:`PieceVerified`, :class:`Tick`...)
and returning actions (:class:`SendRequest`, :class:`SendUnchoke`,
:class:`DropPeer`...):

- piece revelation: :class:`HonestRevelation`, :class:`LazyBitfield`,
  :class:`SuperSeeding` (BEP 16);
- piece selection: :class:`PiecePicker` with :class:`RarestFirst`,
  :class:`RandomFirst`, :class:`Sequential`, :class:`Streaming`, priorities and
  end-game;
- request queueing: :class:`RequestBook` and :class:`PeerQueues` (queue depth from
  measured rates, timeouts, snubbing, bans);
- choking: :class:`Choker` (tit-for-tat with optimistic unchoke; seeding by
  round robin or upload rate);

composed by :class:`SwarmBrain`. The :mod:`bip_select.simulator` module runs real
brains in a deterministic swarm on virtual time. :func:`input_for`, :func:`handle_message`,
:func:`join_inputs`, :func:`block_received` and :func:`message_for` translate between the
brain and bip_peer's messages.
"""

import logging

from ._actions import (
    REASON_BAD_DATA,
    REASON_SNUBBED,
    Action,
    DropPeer,
    SendAllowedFast,
    SendBitfield,
    SendCancel,
    SendChoke,
    SendHave,
    SendHaveAll,
    SendHaveNone,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SendUnchoke,
)
from ._availability import (
    Availability,
)
from ._brain import (
    DEFAULT_REFILL_INTERVAL,
    REASON_BANNED,
    BrainStatistics,
    SwarmBrain,
)
from ._choking import (
    DEFAULT_OPTIMISTIC_INTERVAL,
    DEFAULT_RECHOKE_INTERVAL,
    ChokeDecision,
    Choker,
    SeedChoking,
)
from ._errors import (
    LocalProtocolError,
    SelectError,
)
from ._geometry import (
    BLOCK_SIZE,
    Block,
    TorrentGeometry,
)
from ._inputs import (
    AllowedFast,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockRejected,
    BlockSent,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerKey,
    PeerLeft,
    PeerNotInterested,
    PeerUnchokedUs,
    PeerUploadOnly,
    PieceDeadlineCleared,
    PieceDeadlinesCleared,
    PieceDeadlineSet,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    PrioritiesChanged,
    RequestTimedOut,
    StrategyChanged,
    Tick,
)
from ._queueing import (
    MAX_DEPARTED,
    PeerQueues,
    QueueConfig,
)
from ._requests import (
    Received,
    RequestBook,
)
from ._revelation import (
    CATCH_UP_BATCH,
    CATCH_UP_INTERVAL,
    HonestRevelation,
    LazyBitfield,
    RevelationStrategy,
    SuperSeeding,
)
from ._selection import (
    DEFAULT_PRIORITY,
    MAX_ALLOWED_FAST,
    PiecePicker,
    RandomFirst,
    RarestFirst,
    Sequential,
    Strategy,
    Streaming,
)
from ._wire import (
    block_received,
    handle_message,
    input_for,
    join_inputs,
    message_for,
)

__all__ = [
    "BLOCK_SIZE",
    "CATCH_UP_BATCH",
    "CATCH_UP_INTERVAL",
    "DEFAULT_OPTIMISTIC_INTERVAL",
    "DEFAULT_PRIORITY",
    "DEFAULT_RECHOKE_INTERVAL",
    "DEFAULT_REFILL_INTERVAL",
    "MAX_ALLOWED_FAST",
    "MAX_DEPARTED",
    "REASON_BAD_DATA",
    "REASON_BANNED",
    "REASON_SNUBBED",
    "Action",
    "AllowedFast",
    "Availability",
    "Block",
    "BlockArrived",
    "BlockDropped",
    "BlockReceived",
    "BlockRejected",
    "BlockSent",
    "BrainStatistics",
    "ChokeDecision",
    "Choker",
    "DropPeer",
    "HonestRevelation",
    "Input",
    "LazyBitfield",
    "LocalProtocolError",
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
    "PeerQueues",
    "PeerUnchokedUs",
    "PeerUploadOnly",
    "PieceDeadlineCleared",
    "PieceDeadlineSet",
    "PieceDeadlinesCleared",
    "PieceDiscarded",
    "PieceLost",
    "PiecePicker",
    "PieceVerified",
    "PrioritiesChanged",
    "QueueConfig",
    "RandomFirst",
    "RarestFirst",
    "Received",
    "RequestBook",
    "RequestTimedOut",
    "RevelationStrategy",
    "SeedChoking",
    "SelectError",
    "SendAllowedFast",
    "SendBitfield",
    "SendCancel",
    "SendChoke",
    "SendHave",
    "SendHaveAll",
    "SendHaveNone",
    "SendInterested",
    "SendNotInterested",
    "SendRequest",
    "SendUnchoke",
    "Sequential",
    "Strategy",
    "StrategyChanged",
    "Streaming",
    "SuperSeeding",
    "SwarmBrain",
    "Tick",
    "TorrentGeometry",
    "block_received",
    "handle_message",
    "input_for",
    "join_inputs",
    "message_for",
]

__version__ = "0.1.0"

# The application decides where log records go; without this, Python's last-resort handler
# would print our warnings to stderr in an application that configured no logging at all.
logging.getLogger("bip_select").addHandler(logging.NullHandler())
