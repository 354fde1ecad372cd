"""The errors of the HTTP(S) tracker client, its response reader and its answer parser."""

from __future__ import annotations

from bip_utracker import TrackerError

__all__ = ["HttpTrackerError", "MalformedTrackerResponseError"]


class HttpTrackerError(TrackerError):
    """An HTTP tracker failed: no connection, a TLS error, an HTTP error status, a redirect
    that cannot be followed, or a malformed answer. The :class:`~bip_utracker.Announcer`
    retries it with backoff."""


class MalformedTrackerResponseError(HttpTrackerError):
    """An HTTP tracker's answer is not HTTP, or not a tracker response we can read."""
