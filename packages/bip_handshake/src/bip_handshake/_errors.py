"""The exceptions bip_handshake raises.

As in h11, a protocol error is either ours or the peer's:

- :class:`LocalProtocolError`: the caller used the API wrongly (sent twice,
  accepted a torrent that does not match, fed a failed connection).
- :class:`RemoteProtocolError`: the peer broke the protocol (wrong protocol
  string, unexpected info-hash, too much data). The connection is dead: close it.

Both derive from :class:`HandshakeError`, so ``except HandshakeError`` catches
every protocol failure of this package.
"""

from __future__ import annotations

__all__ = ["HandshakeError", "LocalProtocolError", "RemoteProtocolError"]


class HandshakeError(Exception):
    """Base class of every error bad input can make bip_handshake raise.

    The protocol errors derive from it, and so does each error about malformed data
    (:class:`~bip_handshake.CompactError`, :class:`~bip_handshake.PeerIdError`,
    :class:`~bip_handshake.ExtensionsError`, :class:`~bip_handshake.IPFilterError`,
    :class:`~bip_handshake.ProxyConfigError`, which are :class:`ValueError` s too).
    Not itself a :class:`ValueError`: a protocol error is a failed conversation, not a
    bad argument. Arguments the program got wrong (a type, a negative timeout) still
    raise the built-in :class:`TypeError` / :class:`ValueError`;
    :class:`~bip_handshake.LsdUnavailableError` is an :class:`OSError` of the system's,
    not one of these.

    >>> issubclass(RemoteProtocolError, HandshakeError)
    True
    """


class LocalProtocolError(HandshakeError):
    """The caller misused the API: a programming error on our side.

    >>> raise LocalProtocolError("handshake already sent")
    Traceback (most recent call last):
    ...
    bip_handshake._errors.LocalProtocolError: handshake already sent
    """


class RemoteProtocolError(HandshakeError):
    """The peer broke the protocol; the connection cannot continue.

    >>> raise RemoteProtocolError("not a BitTorrent handshake")
    Traceback (most recent call last):
    ...
    bip_handshake._errors.RemoteProtocolError: not a BitTorrent handshake
    """
