"""The exceptions bip_utracker raises.

- :class:`TrackerError` is the base of everything below.
- :class:`MalformedPacketError`: a datagram that is not a valid BEP 15 packet
  (wrong length, unknown action, bad option). Raised by the codec.
- :class:`TrackerRejectedError`: the tracker answered with an error message.
- :class:`TrackerTimeoutError`: no answer after every retransmission.
- :class:`LocalProtocolError`: the caller misused the API.
"""

from __future__ import annotations

__all__ = [
    "LocalProtocolError",
    "MalformedPacketError",
    "TrackerError",
    "TrackerRejectedError",
    "TrackerTimeoutError",
]


class TrackerError(Exception):
    """Base class of the errors raised by bip_utracker.

    >>> issubclass(TrackerTimeoutError, TrackerError)
    True
    """


class MalformedPacketError(TrackerError):
    """A datagram is not a valid UDP tracker packet.

    >>> raise MalformedPacketError("announce request of 97 bytes, expected at least 98")
    Traceback (most recent call last):
    ...
    bip_utracker._errors.MalformedPacketError: announce request of 97 bytes, expected at least 98
    """


class TrackerRejectedError(TrackerError):
    """The tracker answered with an error message (BEP 15 action 3).

    Attributes:
        message: the tracker's message, decoded as UTF-8 with replacement.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TrackerTimeoutError(TrackerError):
    """The tracker did not answer after every retransmission."""


class LocalProtocolError(TrackerError):
    """The caller misused the API (a reply to nothing, a bad argument combination)."""
