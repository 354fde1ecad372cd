"""Stateless UDP tracker connection ids (BEP 15), as aquatic and opentracker make them.

A connect response grants a 64-bit connection id that the client must echo in its announce and
scrape requests. Its only job is to prove that the client receives datagrams at the source
address it claims, so that nobody can announce a spoofed address into a swarm or make the
tracker send large replies to a victim. Remembering every id granted would cost memory per
client (and a spoofing flood would fill it), so the id is a keyed hash instead:

    connection_id = first 8 bytes of BLAKE2b(key=secret, window || client address)

where ``window`` is the number of whole ``window_length`` periods in ``now``. Without the secret
nobody can compute an id for an address they do not receive at. A request is accepted with the
id of the current window or of the previous one, so an id stays valid for at least
``window_length`` and at most twice that: with the default 60 s, between one and two minutes,
which covers BEP 15's "a client can use a connection ID until one minute after it has received
it" and its "trackers should accept it until two minutes after it has been sent".

The client address is whatever bytes the caller identifies a client by (the server core uses the
IP address text as its socket reports it, without the port: a client behind a NAT may reach us
from several ports).
"""

from __future__ import annotations

import hashlib
import math
import secrets

from ._errors import LocalProtocolError

__all__ = ["DEFAULT_CONNECTION_ID_WINDOW", "ConnectionIds"]

DEFAULT_CONNECTION_ID_WINDOW = 60.0
"""Seconds per window: ids stay valid between one and two windows after they are granted."""

_SECRET_MIN = 16
_SECRET_MAX = 64  # BLAKE2b's longest key
_DIGEST_SIZE = 8
_PERSON = b"bip-utracker-cid"  # keeps these hashes apart from any other use of the same secret


class ConnectionIds:
    """Grants and checks connection ids with no state per client.

    Args:
        secret: the hash key, 16 to 64 bytes; a fresh random one when None. Give the same
            secret to several server processes behind one address so that they accept each
            other's ids; keep it private.
        window_length: seconds per window (ids live between one and two windows).

    >>> ids = ConnectionIds(b"k" * 32)
    >>> cid = ids.issue(b"192.0.2.7", now=1000.0)
    >>> ids.is_valid(cid, b"192.0.2.7", now=1050.0)
    True
    >>> ids.is_valid(cid, b"192.0.2.8", now=1000.0)
    False
    >>> ids.is_valid(cid, b"192.0.2.7", now=1200.0)
    False
    """

    __slots__ = ("_base", "_current", "_end", "_previous", "_start", "_window", "_window_length")

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        window_length: float = DEFAULT_CONNECTION_ID_WINDOW,
    ) -> None:
        if secret is None:
            # A server core is otherwise deterministic; the key is the one thing that must not
            # be, or ids could be forged by anyone who knows how the server was seeded.
            secret = secrets.token_bytes(32)
        if not isinstance(secret, bytes) or not _SECRET_MIN <= len(secret) <= _SECRET_MAX:
            raise LocalProtocolError(
                f"a connection id secret is {_SECRET_MIN}..{_SECRET_MAX} bytes, got {secret!r:.40}"
            )
        if (
            isinstance(window_length, bool)
            or not isinstance(window_length, int | float)
            or not math.isfinite(window_length)
            or window_length <= 0
        ):
            raise LocalProtocolError(
                f"a connection id window is a positive number of seconds, got {window_length!r}"
            )
        self._window_length = float(window_length)
        self._base = hashlib.blake2b(key=secret, digest_size=_DIGEST_SIZE, person=_PERSON)
        # Hashers with the window number already absorbed, for the window last seen and the one
        # before it: a request then costs one copy, one update and one digest.
        self._window: int | None = None
        self._start = math.inf  # the current window is [_start, _end); none yet
        self._end = -math.inf
        self._current = self._base.copy()
        self._previous = self._base.copy()

    @property
    def window_length(self) -> float:
        """Seconds per window."""
        return self._window_length

    def _hasher(self, window: int) -> hashlib.blake2b:
        hasher = self._base.copy()
        hasher.update(window.to_bytes(8, "big", signed=True))
        return hasher

    def _roll(self, now: float) -> None:
        """Make the cached hashers those of the window containing *now* and the one before."""
        if not math.isfinite(now):
            raise LocalProtocolError(f"now is a finite time in seconds, got {now!r}")
        window = math.floor(now / self._window_length)
        if window == self._window:
            return
        if self._window is not None and window == self._window + 1:
            self._previous = self._current
        else:
            self._previous = self._hasher(window - 1)
        self._current = self._hasher(window)
        self._window = window
        self._start = window * self._window_length
        self._end = (window + 1) * self._window_length

    def issue(self, address: bytes, now: float) -> int:
        """The connection id for a client at *address* during the window containing *now*."""
        if not self._start <= now < self._end:
            self._roll(now)
        hasher = self._current.copy()
        hasher.update(address)
        return int.from_bytes(hasher.digest(), "big")

    def is_valid(self, connection_id: int, address: bytes, now: float) -> bool:
        """Whether *connection_id* was granted to *address* in this window or the previous one.

        A wrong id costs two hashes; a current one, one.
        """
        if not self._start <= now < self._end:
            self._roll(now)
        hasher = self._current.copy()
        hasher.update(address)
        if int.from_bytes(hasher.digest(), "big") == connection_id:
            return True
        hasher = self._previous.copy()
        hasher.update(address)
        return int.from_bytes(hasher.digest(), "big") == connection_id
