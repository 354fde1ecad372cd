"""bip_select: the swarm brain of a BitTorrent client.

Sans-IO strategies that a client composes: piece revelation (honest, lazy
bitfield, super-seeding), piece selection (rarest first, random first,
sequential, streaming with deadlines, priorities, end-game), request queueing
(queue depth from measured rates, timeouts, snubbing, banning) and choking
(tit-for-tat with optimistic unchoke; seeding by upload rate or round robin),
with a deterministic swarm simulator to prove them.
"""

from ._errors import LocalProtocolError, SelectError

__all__ = ["LocalProtocolError", "SelectError"]

__version__ = "0.1.0"
