"""bip_dht: the Mainline DHT.

Sans-IO parts of a hardened Mainline DHT node (BEP 5, with BEP 32 IPv6, BEP 33
scrapes, BEP 42 node ids, BEP 43 read-only nodes, BEP 44 storage and BEP 51
sampling). Work in progress: the lookups, the node core, the trio shell and the
simulator come next.
"""

from ._errors import DHTError, ItemError, KRPCError, LocalProtocolError

__all__ = ["DHTError", "ItemError", "KRPCError", "LocalProtocolError"]

__version__ = "0.1.0"
