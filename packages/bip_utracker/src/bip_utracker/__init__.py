"""bip_utracker: UDP BitTorrent trackers (BEP 15, BEP 41).

A sans-IO codec for every packet, a client core (connection ids, retransmission,
transaction matching) and a server core (stateless connection ids, a bounded
swarm store, rate limits), with the trio ``TrackerClient`` and ``TrackerServer``
that run them.
"""

from ._errors import (
    LocalProtocolError,
    MalformedPacketError,
    TrackerError,
    TrackerRejectedError,
    TrackerTimeoutError,
)

__all__ = [
    "LocalProtocolError",
    "MalformedPacketError",
    "TrackerError",
    "TrackerRejectedError",
    "TrackerTimeoutError",
]

__version__ = "0.1.0"
