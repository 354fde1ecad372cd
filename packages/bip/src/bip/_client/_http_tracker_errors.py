"""The errors of the HTTP(S) tracker client, its response reader and its answer parser."""

from __future__ import annotations

from typing import Final, Literal

from bip_utracker import TrackerError, TrackerRejectedError

from ._http_rules import SsrfRule

__all__ = [
    "HttpTrackerError",
    "MalformedTrackerResponseError",
    "TrackerBlockedError",
    "TrackerFailureError",
]


class HttpTrackerError(TrackerError):
    """An HTTP tracker failed: no connection, a TLS error, an HTTP error status, a redirect
    that cannot be followed, or a malformed answer. The :class:`~bip_utracker.Announcer`
    retries it with backoff."""


class TrackerBlockedError(HttpTrackerError):
    """We refused to send a tracker a request: libtorrent's ``ssrf_mitigation`` or
    ``allow_idna`` rule, found once connected or at a redirect (a URL refused as given is a
    :class:`~bip_utracker.LocalProtocolError` of :meth:`HttpTrackerClient.check_tracker`).

    Its ``retry_in`` is ``"never"``: the :class:`~bip_utracker.Announcer` gives the tracker
    up at once, with one failure to report, rather than asking it again with backoff.

    Attributes:
        rule: the rule that refused it, ``"ssrf_mitigation"`` or ``"allow_idna"``.
    """

    retry_in: Final = "never"

    def __init__(self, message: str, *, rule: SsrfRule) -> None:
        super().__init__(message)
        self.rule = rule


class MalformedTrackerResponseError(HttpTrackerError):
    """An HTTP tracker's answer is not HTTP, or not a tracker response we can read."""


class TrackerFailureError(TrackerRejectedError):
    """An HTTP tracker answered with a ``failure reason``: a
    :class:`~bip_utracker.TrackerRejectedError` that also carries what the answer said of
    when to come back, which the :class:`~bip_utracker.Announcer` honours.

    Attributes:
        message: the tracker's ``failure reason`` (one bounded line).
        retry_in: BEP 31's ``retry in``: minutes before trying again (an int, 0 or more), or
            ``"never"`` (do not announce to this tracker again for this torrent); None when
            the answer did not say, or said it in a form BEP 31 does not define.
        interval: seconds the answer asked between announces (its ``interval`` or ``min
            interval``, the larger) if it gave one: a tracker that refuses us for now still
            says how often it wants to hear from us. None if it gave neither.

    >>> error = TrackerFailureError("overloaded", retry_in=5)
    >>> (str(error), error.message, error.retry_in, error.interval)
    ('overloaded', 'overloaded', 5, None)
    """

    def __init__(
        self,
        message: str,
        *,
        retry_in: int | Literal["never"] | None = None,
        interval: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_in = retry_in
        self.interval = interval
