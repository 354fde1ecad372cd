"""The exceptions bip_peer raises.

As in h11, a protocol error is either ours or the peer's:

- :class:`LocalProtocolError`: the caller used the API wrongly (sent a request
  while choked, a have-all after the first message, an extension the peer never
  offered). Its subclass :class:`StaleSendError` is the refusal a caller whose view
  lags the connection's cannot avoid (a cancel for a block that has just arrived).
- :class:`RemoteProtocolError`: the peer broke the protocol (an oversized
  message, a bitfield of the wrong length, a request it was not allowed to make,
  a malformed extension payload). The connection is dead: close it.

Both derive from :class:`PeerError`, so ``except PeerError`` catches every
protocol failure of this package.
"""

from __future__ import annotations

__all__ = [
    "LocalProtocolError",
    "PeerError",
    "PieceLayerFetchError",
    "RemoteProtocolError",
    "StaleSendError",
]


class PeerError(Exception):
    """Base class of the protocol errors raised by bip_peer.

    Not a :class:`ValueError`: a protocol error is a failed conversation, not a
    bad argument. Arguments of the wrong type or range still raise the built-in
    :class:`TypeError` / :class:`ValueError`.

    >>> issubclass(RemoteProtocolError, PeerError)
    True
    """


class LocalProtocolError(PeerError):
    """The caller misused the API: a programming error on our side.

    >>> raise LocalProtocolError("request sent while choked")
    Traceback (most recent call last):
    ...
    bip_peer._errors.LocalProtocolError: request sent while choked
    """


class StaleSendError(LocalProtocolError):
    """A message right by what the caller knew, overtaken by what the peer said since.

    The connection applies a peer's messages as it reads them; a caller learns them later
    (the peer manager's events are a queue). Meanwhile a request may meet a choke or a piece
    the peer took back, a cancel a block that arrived, a block or a reject a request the peer
    cancelled, or a choke that dropped it. The connection refuses such a message and changes
    nothing: nothing is wrong, and a client drops the message (``except StaleSendError``)
    where every other :class:`LocalProtocolError` is its own bug.

    Args:
        *args: the message, as for any exception.
        choked: whether the refusal is a request meeting the peer's choke (a request the
            peer would take unchoked: it has the piece, which it did not allow fast). A
            client that keeps requests across a fast peer's choke (BEP 6) tells these,
            which the peer never saw and so never rejects, from the other refusals.

    >>> issubclass(StaleSendError, LocalProtocolError)
    True
    >>> StaleSendError("request while choked", choked=True).choked
    True
    >>> StaleSendError("cancel of a block that arrived").choked
    False
    """

    def __init__(self, *args: object, choked: bool = False) -> None:
        super().__init__(*args)
        self.choked: bool = choked
        """Whether the peer's choke refused it (a request the peer would take unchoked)."""


class RemoteProtocolError(PeerError):
    """The peer broke the protocol; the connection cannot continue.

    >>> raise RemoteProtocolError("bitfield of 3 bytes for 100 pieces")
    Traceback (most recent call last):
    ...
    bip_peer._errors.RemoteProtocolError: bitfield of 3 bytes for 100 pieces
    """


class PieceLayerFetchError(PeerError):
    """:meth:`~bip_peer.PieceLayerExchange.fetch` ended without every piece layer verified.

    The torrent's v2 peers did not answer (or were not there) within the timeout; the
    message counts what was fetched, from how many peers.

    >>> issubclass(PieceLayerFetchError, PeerError)
    True
    """
