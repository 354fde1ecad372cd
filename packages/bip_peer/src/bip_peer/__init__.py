"""bip_peer: the BitTorrent peer wire protocol.

Sans-IO cores for every message of BEP 3, 5, 6, 9, 10, 11, 21, 52 and 54, a
per-connection protocol state that enforces the rules both ways, the BEP 9
metadata exchange and BEP 11 peer exchange logic, and the trio ``PeerManager``
that runs many connections with heartbeats, backpressure and statistics.
"""

from ._errors import LocalProtocolError, PeerError, RemoteProtocolError

__all__ = ["LocalProtocolError", "PeerError", "RemoteProtocolError"]

__version__ = "0.1.0"
