"""Write tokens: proof that an ``announce_peer`` or ``put`` comes from the address that asked.

BEP 5: a node hands out an opaque ``token`` in its ``get_peers`` (and BEP 44 ``get``)
responses and accepts an ``announce_peer``/``put`` only with a token it recently gave that
same IP. Like libtorrent, the token is a keyed hash of the requester's IP (and of the
target, so a token for one torrent cannot announce another) under a secret that is
replaced every 5 minutes; tokens made under the previous secret are still accepted, so a
token lives between 5 and 10 minutes.

API (sans-IO: time is passed in, secrets come from an injected ``random.Random``; give it a
``random.SystemRandom()`` in production so the secrets are unpredictable):

- :class:`TokenManager` ``(rng, now, *, rotate_interval=300.0, token_size=8)``.
  ``token(ip, target, now) -> bytes`` makes a token; ``verify(token, ip, target, now) ->
  bool`` checks one (never raises on a peer's garbage); both rotate the secret when due, and
  ``rotate_if_due(now)`` does it explicitly; ``next_rotation`` says when the next is due.
- ``ip`` is an ``IPv4Address``/``IPv6Address`` (an IPv4-mapped IPv6 address counts as its
  IPv4 address); ``target`` is bytes (the info-hash or BEP 44 target; ``b""`` if unused).

>>> import random
>>> from ipaddress import IPv4Address
>>> tokens = TokenManager(random.Random(1), now=0.0)
>>> ip = IPv4Address("10.0.0.1")
>>> t = tokens.token(ip, b"h" * 20, now=10.0)
>>> tokens.verify(t, ip, b"h" * 20, now=400.0)  # one rotation later: still good
True
>>> tokens.verify(t, IPv4Address("10.0.0.2"), b"h" * 20, now=400.0)
False
>>> tokens.verify(t, ip, b"h" * 20, now=700.0)  # two rotations later: expired
False
"""

from __future__ import annotations

import hashlib
import hmac
import random
from ipaddress import IPv4Address, IPv6Address

from ._errors import LocalProtocolError
from ._ip import unmapped_ip

__all__ = ["DEFAULT_ROTATE_INTERVAL", "DEFAULT_TOKEN_SIZE", "TokenManager"]

DEFAULT_ROTATE_INTERVAL = 300.0
"""Seconds between write-token secret rotations (a token stays valid for two intervals)."""

DEFAULT_TOKEN_SIZE = 8
"""The length of the write tokens we hand out, in bytes."""

_SECRET_SIZE = 32


class TokenManager:
    """Makes and checks write tokens from a rotating secret (current and previous).

    Attributes:
        rotate_interval: seconds between secret rotations.
        token_size: bytes per token (4 to 32; libtorrent uses 4, the default 8 makes
            guessing a token for a forged source address hopeless).
    """

    __slots__ = ("_current", "_previous", "_rng", "_rotated_at", "rotate_interval", "token_size")

    def __init__(
        self,
        rng: random.Random,
        now: float,
        *,
        rotate_interval: float = DEFAULT_ROTATE_INTERVAL,
        token_size: int = DEFAULT_TOKEN_SIZE,
    ) -> None:
        if not rotate_interval > 0:
            raise LocalProtocolError(f"rotate_interval must be positive, got {rotate_interval}")
        if isinstance(token_size, bool) or not isinstance(token_size, int):
            raise LocalProtocolError(f"token_size is an int, got {token_size!r}")
        if not 4 <= token_size <= 32:
            raise LocalProtocolError(f"token_size is 4 to 32 bytes, got {token_size}")
        self._rng = rng
        self.rotate_interval = float(rotate_interval)
        self.token_size = token_size
        self._current = rng.randbytes(_SECRET_SIZE)
        # No previous secret yet: a fresh one nobody has seen, so nothing matches it by luck.
        self._previous = rng.randbytes(_SECRET_SIZE)
        self._rotated_at = now

    @property
    def next_rotation(self) -> float:
        """The time at which the current secret becomes the previous one."""
        return self._rotated_at + self.rotate_interval

    def rotate_if_due(self, now: float) -> bool:
        """Rotate the secret if ``rotate_interval`` has passed; return whether it did.

        After two or more intervals without a call both secrets are replaced, so no token
        outlives two intervals. A clock going backwards changes nothing.
        """
        elapsed = now - self._rotated_at
        if elapsed < self.rotate_interval:
            return False
        if elapsed >= 2 * self.rotate_interval:
            self._previous = self._rng.randbytes(_SECRET_SIZE)
            self._current = self._rng.randbytes(_SECRET_SIZE)
            self._rotated_at = now
        else:
            self._previous = self._current
            self._current = self._rng.randbytes(_SECRET_SIZE)
            self._rotated_at += self.rotate_interval
        return True

    def _make(self, secret: bytes, address: bytes, target: bytes) -> bytes:
        # The address has a fixed length per family and comes first, so (address, target)
        # pairs cannot collide by shifting bytes between the two.
        return hashlib.blake2b(
            bytes((len(address),)) + address + target, key=secret, digest_size=self.token_size
        ).digest()

    def token(self, ip: IPv4Address | IPv6Address, target: bytes, now: float) -> bytes:
        """The token to give ``ip`` for writes to ``target`` (under the current secret)."""
        if not isinstance(target, bytes):
            raise LocalProtocolError(f"a token's target is bytes, got {target!r}")
        self.rotate_if_due(now)
        return self._make(self._current, unmapped_ip(ip, "a token's ip").packed, target)

    def verify(
        self, token: object, ip: IPv4Address | IPv6Address, target: bytes, now: float
    ) -> bool:
        """Whether ``token`` was made for ``ip`` and ``target`` under the current or last secret.

        ``token`` comes from the network, so anything that is not bytes of the right length
        is simply not valid.
        """
        if not isinstance(token, bytes) or len(token) != self.token_size:
            return False
        if not isinstance(target, bytes):
            raise LocalProtocolError(f"a token's target is bytes, got {target!r}")
        self.rotate_if_due(now)
        address = unmapped_ip(ip, "a token's ip").packed
        current = hmac.compare_digest(token, self._make(self._current, address, target))
        previous = hmac.compare_digest(token, self._make(self._previous, address, target))
        return current or previous
