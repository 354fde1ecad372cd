"""The exceptions bip_select raises.

The strategies take their inputs from a client, which took them from peers; a
peer's nonsense (a have for a piece past the end, a block nobody asked for) is
the client's to filter (bip_peer's ``PeerConnection`` does) and is ignored here,
never raised. What raises is the client misusing the API.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "SelectError"]


class SelectError(Exception):
    """Base class of the errors raised by bip_select.

    >>> issubclass(LocalProtocolError, SelectError)
    True
    """


class LocalProtocolError(SelectError):
    """The caller misused the API (an unknown peer, a piece outside the torrent, ...).

    >>> raise LocalProtocolError("peer 7 never joined")
    Traceback (most recent call last):
    ...
    bip_select._errors.LocalProtocolError: peer 7 never joined
    """
