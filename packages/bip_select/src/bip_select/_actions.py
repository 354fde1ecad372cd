"""What the swarm brain asks a client to do: one frozen dataclass per decision.

:meth:`bip_select.SwarmBrain.handle` and :meth:`~bip_select.SwarmBrain.tick` return these, in the
order they should be carried out. Each names the peer (the client's own :data:`PeerKey`) and maps
onto one bip_peer message send (``SendRequest`` onto a ``Request``, ``SendHave`` onto a ``Have``,
...) or, for :class:`DropPeer`, onto closing the connection. The brain has already updated its own
state as if the action were done: a client that cannot carry one out (the connection closed
meanwhile) reports it with the matching input (:class:`~bip_select.PeerLeft`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._geometry import Block
from ._inputs import PeerKey

__all__ = [
    "REASON_BAD_DATA",
    "REASON_SNUBBED",
    "Action",
    "DropPeer",
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
]

REASON_BAD_DATA: Final = "sent bad data"
"""The :attr:`DropPeer.reason` of a peer banned for contributing to too many bad pieces."""

REASON_SNUBBED: Final = "snubbed"
"""The :attr:`DropPeer.reason` of a peer that kept us waiting and was given up on."""


class Action:
    """Base class of everything the brain asks a client to do.

    Every action is about one peer: :attr:`peer`, the client's own :data:`PeerKey` for it,
    so a client can route any action (``manager.send_nowait(action.peer, ...)``) before it
    looks at its kind.
    """

    __slots__ = ()

    # Declared only: each subclass is a dataclass whose first field is ``peer`` (a plain
    # annotation here makes no slot, no class attribute and no dataclass field).
    peer: PeerKey
    """The peer the action is about."""


@dataclass(frozen=True, slots=True)
class SendInterested(Action):
    """Tell ``peer`` we are interested: it has pieces we want."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class SendNotInterested(Action):
    """Tell ``peer`` we are no longer interested: it has nothing more we want."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class SendRequest(Action):
    """Request ``block`` from ``peer``.

    >>> from bip_select._geometry import Block
    >>> SendRequest(3, Block(0, 16384, 16384))
    SendRequest(peer=3, block=Block(piece=0, begin=16384, length=16384))
    """

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class SendCancel(Action):
    """Cancel our request for ``block`` to ``peer`` (another peer delivered it: end-game)."""

    peer: PeerKey
    block: Block


@dataclass(frozen=True, slots=True)
class SendHave(Action):
    """Tell ``peer`` we have ``piece``."""

    peer: PeerKey
    piece: int


@dataclass(frozen=True, slots=True)
class SendBitfield(Action):
    """Send ``peer`` our bitfield: the pieces we reveal (all or part of what we have)."""

    peer: PeerKey
    pieces: frozenset[int]


@dataclass(frozen=True, slots=True)
class SendHaveAll(Action):
    """Tell ``peer`` we have every piece (BEP 6; only to a peer that speaks the fast extension)."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class SendHaveNone(Action):
    """Tell ``peer`` we have nothing yet (BEP 6; only to a peer that speaks the fast extension)."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class SendChoke(Action):
    """Choke ``peer``: we stop serving its requests."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class SendUnchoke(Action):
    """Unchoke ``peer``: it may request from us."""

    peer: PeerKey


@dataclass(frozen=True, slots=True)
class SendAllowedFast(Action):
    """Let ``peer`` request ``piece`` while choked (BEP 6 allowed fast)."""

    peer: PeerKey
    piece: int


@dataclass(frozen=True, slots=True)
class DropPeer(Action):
    """Close the connection to ``peer`` and, for :data:`REASON_BAD_DATA`, do not reconnect.

    The brain has already forgotten the peer (as if :class:`~bip_select.PeerLeft` arrived), so
    the client need not report the close. For :data:`REASON_BAD_DATA` the peer may have left
    already (a source of a bad piece that hung up before the verdict): there is nothing to
    close, but the client still bans what it came from.
    """

    peer: PeerKey
    reason: str
