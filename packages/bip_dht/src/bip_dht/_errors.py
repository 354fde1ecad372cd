"""The exceptions bip_dht raises.

- :class:`DHTError` is the base of everything below.
- :class:`KRPCError`: a datagram is not a valid KRPC message (the codec's error; the node
  core drops and counts such datagrams, it never raises on network input).
- :class:`ItemError`: a BEP 44 item is invalid (too large, bad signature, sequence number
  going backwards, compare-and-swap mismatch).
- :class:`LocalProtocolError`: the caller misused the API.
"""

from __future__ import annotations

__all__ = ["DHTError", "ItemError", "KRPCError", "LocalProtocolError"]


class DHTError(Exception):
    """Base class of the errors raised by bip_dht.

    >>> issubclass(KRPCError, DHTError)
    True
    """


class KRPCError(DHTError):
    """A datagram is not a valid KRPC message.

    >>> raise KRPCError("'y' is missing")
    Traceback (most recent call last):
    ...
    bip_dht._errors.KRPCError: 'y' is missing
    """


class ItemError(DHTError):
    """A BEP 44 item is invalid: too large, badly signed, stale, or a CAS mismatch."""


class LocalProtocolError(DHTError):
    """The caller misused the API."""
