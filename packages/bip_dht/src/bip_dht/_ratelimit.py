"""Per-IP token buckets with bounded memory: how many queries one host may make us answer.

A DHT node answers whoever asks, so one host (or a forged source address) could make it spend
its upload on replies. :class:`RateLimiter` gives each source IP a token bucket: ``rate``
tokens per second, at most ``burst`` saved up; every query spends one (or ``cost``), and a
query finding the bucket empty is dropped silently, as libtorrent drops over-limit queries.

Memory is bounded whatever the number of sources: at most ``max_hosts`` buckets are kept in
least-recently-used order, and a new host evicts the one heard from longest ago. An evicted
host starts again with a full bucket; that only helps a host that stayed quiet while
``max_hosts`` others spoke, so it costs at most one burst per eviction round.

An IPv4-mapped IPv6 address counts as its IPv4 address. Time is the caller's ``now``
(seconds, monotonic).

>>> from ipaddress import IPv4Address
>>> limiter = RateLimiter(rate=1.0, burst=2.0)
>>> ip = IPv4Address("10.0.0.1")
>>> [limiter.allow(ip, now=0.0) for _ in range(3)]
[True, True, False]
>>> limiter.allow(ip, now=1.0)
True
"""

from __future__ import annotations

from collections import OrderedDict
from ipaddress import IPv4Address, IPv6Address

from ._errors import LocalProtocolError
from ._ip import unmapped_ip

__all__ = [
    "DEFAULT_QUERY_BURST",
    "DEFAULT_QUERY_RATE",
    "DEFAULT_RATE_LIMITED_HOSTS",
    "RateLimiter",
]

DEFAULT_QUERY_RATE = 10.0
"""Queries per second one IP may make us answer over time (a busy client rarely needs 2)."""
DEFAULT_QUERY_BURST = 40.0
"""How many queries one IP may send at once (a lookup's burst from one host stays under it)."""
DEFAULT_RATE_LIMITED_HOSTS = 4096
"""How many per-IP buckets are kept at most (about 100 bytes each)."""


class RateLimiter:
    """Token buckets per source IP in a bounded LRU.

    Attributes:
        rate: tokens added per second.
        burst: a bucket's capacity (and a new host's starting tokens).
        max_hosts: how many buckets are kept at most.
    """

    __slots__ = ("_buckets", "burst", "max_hosts", "rate")

    def __init__(
        self,
        *,
        rate: float = DEFAULT_QUERY_RATE,
        burst: float = DEFAULT_QUERY_BURST,
        max_hosts: int = DEFAULT_RATE_LIMITED_HOSTS,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise LocalProtocolError(f"rate is a positive number, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int | float) or not burst >= 1:
            raise LocalProtocolError(f"burst is a number of at least 1, got {burst!r}")
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1:
            raise LocalProtocolError(f"max_hosts is a positive int, got {max_hosts!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_hosts = max_hosts
        # ip -> (tokens, time of the last refill)
        self._buckets: OrderedDict[IPv4Address | IPv6Address, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many hosts have a bucket."""
        return len(self._buckets)

    def allow(self, ip: IPv4Address | IPv6Address, now: float, cost: float = 1.0) -> bool:
        """Spend *cost* tokens of *ip*'s bucket if it has them; say whether it had.

        A refused request spends nothing, so a host that keeps flooding is refused until it
        slows down to ``rate``.
        """
        key = unmapped_ip(ip, "ip")
        state = self._buckets.pop(key, None)
        if state is None:
            tokens = self.burst
        else:
            tokens, last = state
            # A clock that steps backwards refills nothing rather than draining the bucket.
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_hosts:
            self._buckets.popitem(last=False)
        return allowed
