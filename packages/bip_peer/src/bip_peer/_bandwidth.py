"""Rate limits: a sans-IO token bucket, and the trio limiter that many peers share.

:class:`TokenBucket` is the arithmetic, with the time passed in (``now``, seconds on any
monotonic clock): tokens (bytes) accrue at ``rate`` per second up to ``burst``, and taking
one sends or reads one byte. Over any stretch of time ``t`` no more than ``rate * t +
burst`` bytes are taken (plus what was given back).

:class:`BandwidthLimiter` is the trio side: the writers (or the readers) of every peer of a
:class:`~bip_peer.PeerManager` ask it for tokens before each ``send_all`` (or
``receive_some``). It is fair the way libtorrent's bandwidth manager is, by taking turns:

- waiters are served first come, first served, and each is granted at most one
  *quantum* per turn; a peer that wants more queues again behind the others. A fast peer
  therefore cannot starve the others, and a keep-alive or a request waits behind no more
  than one quantum per waiting peer;
- the quantum is the burst shared among the waiters (never under :data:`MIN_QUANTUM`), so
  a turn of the whole queue lasts about ``burst / rate`` (a tenth of a second by default)
  however many peers wait;
- a waiter that is cancelled takes no tokens and leaves the queue at once; the next in
  line carries on;
- :meth:`BandwidthLimiter.set_rate` applies to the waiters at once: the one at the head
  recomputes its wait with the new rate, and a limit lifted (``None``) releases everyone.

Burst. libtorrent hands out quota in time slices (its ``tick_interval``, 500 ms, and a
channel keeps at most three seconds of it). A token bucket's burst is the same knob: the
larger it is, the more a pause can be made up for at once; the smaller, the more wakeups
(and smaller writes) per second. :func:`default_burst` is a tenth of a second of the rate,
but never less than one piece message (a 16 KiB block and its 13-byte header), so that
even a slow limit sends a block in one write rather than in crumbs.

Unlimited. A rate of ``None`` or ``0`` means no limit, as libtorrent's ``0``. The limiter
then grants whatever is asked without counting anything; the peer manager does not even
call it (it tests :attr:`BandwidthLimiter.limited`, a plain attribute, once per read or
write), so an unlimited manager runs exactly as one without limits.

Local peers. A limit is there to share a slow link (the uplink of a home connection) with
everything else that uses it; a peer on the same machine or the same local network does not
cross that link. libtorrent therefore puts such peers in its "local" peer class, which has
no rate limit, and so does the peer manager unless told otherwise
(:attr:`~bip_peer.PeerManagerConfig.limit_local_peers`). :func:`is_local_address` says
which addresses count: libtorrent's ranges (:data:`LOCAL_NETWORKS`). The bytes of such
peers never reach :meth:`BandwidthLimiter.acquire` (they take no turn and no token from
the others); :meth:`BandwidthLimiter.count_exempt` only counts them, for the statistics.
"""

from __future__ import annotations

import math
from collections import deque
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

import trio

from ._messages import BLOCK_SIZE
from ._stats import LimiterStatistics

__all__ = [
    "DEFAULT_BURST_SECONDS",
    "LOCAL_NETWORKS",
    "MIN_BURST",
    "MIN_QUANTUM",
    "BandwidthLimiter",
    "TokenBucket",
    "check_rate",
    "default_burst",
    "is_local_address",
]

DEFAULT_BURST_SECONDS: Final = 0.1
"""The default burst, in seconds of the rate (see :func:`default_burst`)."""
MIN_BURST: Final = BLOCK_SIZE + 13
"""The smallest default burst: one piece message (a 16 KiB block and its header)."""
MIN_QUANTUM: Final = 1024
"""The least a turn of :class:`BandwidthLimiter` grants, however many peers wait.

Below this the per-grant cost (a wakeup, a write) would outweigh the bytes. At a rate so
low that many peers times this is seconds of it, each peer still makes progress every
round, just a slow one.
"""
_MIN_SLEEP: Final = 1e-6
"""The shortest wait for tokens: a wait rounded to nothing must still let time advance."""

LOCAL_NETWORKS: Final[tuple[IPv4Network | IPv6Network, ...]] = (
    IPv4Network("10.0.0.0/8"),  # private (RFC 1918)
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv4Network("169.254.0.0/16"),  # link-local (RFC 3927)
    IPv4Network("127.0.0.0/8"),  # loopback
    IPv6Network("fc00::/7"),  # unique local (RFC 4193)
    IPv6Network("fe80::/10"),  # link-local
    IPv6Network("::1/128"),  # loopback
)
"""The networks whose peers are "local": libtorrent's local peer class, range for range.

libtorrent's session fills its default peer class filter with these (``10/8``,
``172.16/12``, ``192.168/16``, ``169.254/16``, ``127/8``, ``fc00::/7``, ``fe80::/10``,
``::1``). Deliberately not Python's ``is_private``, which also counts documentation,
benchmarking and reserved ranges: an address there is not on our network.
"""
_LOCAL_V4: Final = tuple(net for net in LOCAL_NETWORKS if isinstance(net, IPv4Network))
_LOCAL_V6: Final = tuple(net for net in LOCAL_NETWORKS if isinstance(net, IPv6Network))


def is_local_address(host: IPv4Address | IPv6Address) -> bool:
    """Whether a peer at ``host`` is on a local network (:data:`LOCAL_NETWORKS`).

    An IPv4 address in IPv6 form (``::ffff:10.0.0.1``, as a dual-stack socket reports an
    IPv4 peer) counts as that IPv4 address: the same peer is not local or remote depending
    on the socket that met it. A scope (``fe80::1%eth0``) does not matter.

    >>> is_local_address(IPv4Address("192.168.1.20")), is_local_address(IPv4Address("8.8.8.8"))
    (True, False)
    >>> is_local_address(IPv6Address("::ffff:127.0.0.1")), is_local_address(IPv6Address("fd00::5"))
    (True, True)

    Raises:
        TypeError: ``host`` is not an :class:`~ipaddress.IPv4Address` or
            :class:`~ipaddress.IPv6Address`.
    """
    if isinstance(host, IPv6Address):
        mapped = host.ipv4_mapped
        if mapped is None:
            return any(host in network for network in _LOCAL_V6)
        host = mapped
    elif not isinstance(host, IPv4Address):
        raise TypeError(f"a host is an IPv4Address or IPv6Address, not {host!r}")
    return any(host in network for network in _LOCAL_V4)


def check_rate(rate: object, name: str = "rate") -> float | None:
    """``rate`` as a limit: ``None`` for unlimited (``None`` or ``0``), else a positive float.

    >>> check_rate(0) is None, check_rate(1500)
    (True, 1500.0)

    Raises:
        TypeError: ``rate`` is not a number of bytes per second (a bool is not one).
        ValueError: ``rate`` is negative, NaN or infinite.
    """
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise TypeError(f"{name} must be bytes per second (a number) or None, not {rate!r}")
    try:
        value = float(rate)
    except OverflowError:  # an int too large for a float is not a rate either
        raise ValueError(f"{name} must be finite, not {rate!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and not negative, not {rate!r}")
    return value or None


def _check_burst(burst: object) -> float | None:
    """A burst given explicitly: positive and finite (``None``: the default)."""
    if burst is None:
        return None
    if isinstance(burst, bool) or not isinstance(burst, int | float):
        raise TypeError(f"burst must be a number of bytes or None, not {burst!r}")
    try:
        value = float(burst)
    except OverflowError:
        raise ValueError(f"burst must be finite, not {burst!r}") from None
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"burst must be finite and at least one byte, not {burst!r}")
    return value


def _check_now(now: float) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, not {now!r}")


def _check_amount(amount: object) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"an amount of bytes is an int, not {amount!r}")
    if amount < 0:
        raise ValueError(f"an amount of bytes is not negative, got {amount}")


def default_burst(rate: float) -> float:
    """The burst a bucket of ``rate`` bytes per second gets unless told otherwise.

    A tenth of a second of the rate, or one piece message, whichever is larger.

    >>> default_burst(10_000_000), default_burst(1000)
    (1000000.0, 16397.0)
    """
    return max(rate * DEFAULT_BURST_SECONDS, float(MIN_BURST))


class TokenBucket:
    """A token bucket: ``rate`` tokens (bytes) a second, at most ``burst`` saved up.

    Sans-IO: every method that needs the time takes ``now``. Time that goes backwards
    counts as the latest time seen (nothing accrues). The bucket starts full. A rate of
    ``None`` or ``0`` is unlimited: every take is granted in full.

    >>> bucket = TokenBucket(1000, burst=2000, now=0.0)
    >>> bucket.take(5000, now=0.0)  # the burst, no more
    2000
    >>> bucket.delay(500, now=0.0)  # half a second to earn 500 tokens
    0.5
    >>> bucket.take(500, now=0.5)
    500

    Args:
        rate: bytes per second, or ``None`` / ``0`` for no limit.
        now: the current time.
        burst: the most tokens kept (``None``: :func:`default_burst` of the rate).

    Raises:
        TypeError: ``rate`` or ``burst`` is not a number.
        ValueError: ``rate`` is negative, NaN or infinite; ``burst`` is under one byte or
            not finite; ``now`` is not finite.
    """

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float | None, *, now: float, burst: float | None = None) -> None:
        _check_now(now)
        self._rate: float | None = None
        self._burst = math.inf
        self._tokens = math.inf
        self._updated = now
        self.set_rate(rate, now=now, burst=burst)

    @property
    def rate(self) -> float | None:
        """Bytes per second; ``None`` when unlimited."""
        return self._rate

    @property
    def burst(self) -> float | None:
        """The most tokens kept; ``None`` when unlimited."""
        return None if self._rate is None else self._burst

    @property
    def limited(self) -> bool:
        """Whether there is a limit at all."""
        return self._rate is not None

    def set_rate(self, rate: float | None, *, now: float, burst: float | None = None) -> None:
        """Change the rate (and the burst) from ``now`` on.

        Tokens earned until ``now`` at the old rate are kept, up to the new burst; a
        bucket that was unlimited starts full.

        Raises:
            TypeError, ValueError: as the constructor (nothing is changed then).
        """
        value = check_rate(rate)
        cap = _check_burst(burst)
        _check_now(now)
        self._refill(now)
        self._rate = value
        if value is None:
            self._burst = self._tokens = math.inf
            return
        self._burst = cap if cap is not None else default_burst(value)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        """Add the tokens earned since the last update (never more than the burst)."""
        if now > self._updated:
            rate = self._rate
            if rate is not None and self._tokens < self._burst:
                self._tokens = min(self._burst, self._tokens + (now - self._updated) * rate)
            self._updated = now

    def available(self, now: float) -> float:
        """Tokens there at ``now`` (``math.inf`` when unlimited)."""
        _check_now(now)
        self._refill(now)
        return self._tokens

    def take(self, amount: int, now: float) -> int:
        """Take up to ``amount`` whole tokens at ``now``; returns how many were taken.

        Raises:
            TypeError: ``amount`` is not an int.
            ValueError: ``amount`` is negative, or ``now`` is not finite.
        """
        _check_amount(amount)
        _check_now(now)
        if self._rate is None:
            return amount
        self._refill(now)
        taken = min(amount, int(self._tokens))
        self._tokens -= taken
        return taken

    def delay(self, amount: int, now: float) -> float:
        """Seconds from ``now`` until ``amount`` tokens are there (0 if they are now).

        Raises:
            TypeError: ``amount`` is not an int.
            ValueError: ``amount`` is negative or more than the burst (it would never be
                there at once), or ``now`` is not finite.
        """
        _check_amount(amount)
        _check_now(now)
        rate = self._rate
        if rate is None:
            return 0.0
        if amount > self._burst:
            raise ValueError(f"{amount} tokens never fit a burst of {self._burst:g}")
        self._refill(now)
        missing = amount - self._tokens
        return missing / rate if missing > 0 else 0.0

    def give_back(self, amount: int, now: float) -> None:
        """Return ``amount`` tokens taken and not used (the bucket keeps at most its burst).

        Raises:
            TypeError: ``amount`` is not an int.
            ValueError: ``amount`` is negative, or ``now`` is not finite.
        """
        _check_amount(amount)
        _check_now(now)
        if self._rate is None:
            return
        self._refill(now)
        self._tokens = min(self._burst, self._tokens + amount)

    def __repr__(self) -> str:
        if self._rate is None:
            return "<TokenBucket unlimited>"
        return f"<TokenBucket {self._rate:g} B/s burst {self._burst:g} tokens {self._tokens:g}>"


class _Waiter:
    """One task in a limiter's queue."""

    __slots__ = ("amount", "since", "turn")

    def __init__(self, amount: int, since: float) -> None:
        self.amount = amount
        self.since = since
        self.turn = trio.Event()  # set when this waiter reaches the head of the queue


class BandwidthLimiter:
    """A rate limit that many tasks share fairly (see the module's docstring).

    Create it inside trio (it reads ``trio.current_time()``). Each :meth:`acquire` asks
    for some bytes and is granted between one and that many, at most one quantum.

    >>> async def send_limited(limiter, stream, data):  # doctest: +SKIP
    ...     view = memoryview(data)
    ...     while view:
    ...         granted = await limiter.acquire(len(view))
    ...         await stream.send_all(view[:granted])
    ...         view = view[granted:]

    Attributes:
        limited: whether there is a limit now (a plain attribute: cheap on a hot path).

    Args:
        rate: bytes per second, or ``None`` / ``0`` for no limit.
        burst: the most bytes that may go at once after a pause (``None``:
            :func:`default_burst` of the rate).

    Raises:
        TypeError, ValueError: as :class:`TokenBucket`.
    """

    __slots__ = (
        "_bucket",
        "_exempt",
        "_generation",
        "_granted",
        "_wait_time",
        "_waiters",
        "_waits",
        "_wakeup",
        "limited",
    )

    def __init__(self, rate: float | None = None, *, burst: float | None = None) -> None:
        self._bucket = TokenBucket(rate, now=trio.current_time(), burst=burst)
        self.limited = self._bucket.limited
        self._waiters: deque[_Waiter] = deque()
        self._wakeup = trio.lowlevel.ParkingLot()  # the head of the queue, sleeping
        self._generation = 0
        self._waits = 0
        self._wait_time = 0.0
        self._granted = 0
        self._exempt = 0

    @property
    def rate(self) -> float | None:
        """Bytes per second; ``None`` when unlimited."""
        return self._bucket.rate

    @property
    def burst(self) -> float | None:
        """The most bytes that may go at once after a pause; ``None`` when unlimited."""
        return self._bucket.burst

    @property
    def generation(self) -> int:
        """How many times :meth:`set_rate` was called.

        A task that keeps tokens for later (a reader's quota) gives them back when this
        changed, so that a lowered rate applies to them too.
        """
        return self._generation

    @property
    def quantum(self) -> int | None:
        """The most one :meth:`acquire` would be granted now (``None`` when unlimited).

        The burst shared among the waiters, never under :data:`MIN_QUANTUM` nor over the
        burst. A writer sizes its batches by it.
        """
        if not self.limited:
            return None
        return self._grant_cap(len(self._waiters) or 1)

    def _grant_cap(self, waiting: int) -> int:
        burst = self._bucket._burst
        return max(1, int(min(burst, max(float(MIN_QUANTUM), burst / waiting))))

    def set_rate(self, rate: float | None, *, burst: float | None = None) -> None:
        """Change the limit now; the waiters see the new rate at once.

        Tokens saved up are kept (up to the new burst). ``None`` or ``0`` lifts the limit
        and grants every waiter what it asked for.

        Raises:
            TypeError, ValueError: as :class:`TokenBucket` (nothing is changed then).
        """
        self._bucket.set_rate(rate, now=trio.current_time(), burst=burst)
        self.limited = self._bucket.limited
        self._generation += 1
        self._wakeup.unpark_all()  # the head recomputes its wait (or, unlimited, goes)

    def give_back(self, amount: int) -> None:
        """Return ``amount`` bytes granted and not used (kept up to the burst).

        Raises:
            TypeError: ``amount`` is not an int.
            ValueError: ``amount`` is negative.
        """
        self._bucket.give_back(amount, trio.current_time())
        if amount and self._waiters:
            self._wakeup.unpark_all()

    def count_exempt(self, amount: int) -> None:
        """Count ``amount`` bytes that went past this limit, exempt from it (a local peer's).

        Only counted while there is a limit (unlimited, no byte is exempt from anything);
        nothing else changes: no token is taken, no waiter is held up.

        Raises:
            TypeError: ``amount`` is not an int.
            ValueError: ``amount`` is negative.
        """
        _check_amount(amount)
        if self.limited:
            self._exempt += amount

    async def acquire(self, amount: int) -> int:
        """Wait for tokens; returns how many bytes may go: at least 1, at most ``amount``.

        Waiters are served in the order they came, each turn granting at most
        :attr:`quantum`. Unlimited, ``amount`` is granted at once. Always a checkpoint;
        cancelled, it takes nothing and the next waiter goes on.

        Raises:
            TypeError: ``amount`` is not an int.
            ValueError: ``amount`` is under 1.
        """
        _check_amount(amount)
        if amount < 1:
            raise ValueError(f"acquire at least one byte, not {amount}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.limited:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return amount
        if not self._waiters:
            now = trio.current_time()
            grant = min(amount, self._grant_cap(1))
            if self._bucket.delay(grant, now) <= 0:
                self._bucket.take(grant, now)
                self._granted += grant
                # Taken: from here on nothing may raise Cancelled and lose the tokens.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return grant
        return await self._wait(amount)

    async def _wait(self, amount: int) -> int:
        """Queue for ``amount``: wait for the turn, then for the tokens of one grant."""
        waiters = self._waiters
        waiter = _Waiter(amount, trio.current_time())
        waiters.append(waiter)
        if len(waiters) == 1:
            waiter.turn.set()
        else:
            # The head's grant shrinks now that one more shares the burst: let it
            # recompute, so that it goes sooner and a small message behind it too.
            self._wakeup.unpark_all()
        self._waits += 1
        bucket = self._bucket
        try:
            await waiter.turn.wait()
            while True:
                now = trio.current_time()
                if not self.limited:
                    grant = amount
                    break
                grant = min(amount, self._grant_cap(len(waiters)))
                delay = bucket.delay(grant, now)
                if delay <= 0:
                    bucket.take(grant, now)
                    self._granted += grant
                    break
                # Woken early by set_rate or give_back: the loop recomputes the wait.
                with trio.move_on_at(now + max(delay, _MIN_SLEEP)):
                    await self._wakeup.park()
        finally:
            # Granted or cancelled, this waiter leaves; if it was the head, the next one
            # takes over. Nothing here is a checkpoint: tokens taken are never lost.
            if waiters and waiters[0] is waiter:
                waiters.popleft()
                if waiters:
                    waiters[0].turn.set()
            else:
                waiters.remove(waiter)
            self._wait_time += trio.current_time() - waiter.since
        return grant

    def statistics(self) -> LimiterStatistics:
        """A snapshot: the limit, the waiters, the waits so far."""
        now = trio.current_time()
        return LimiterStatistics(
            rate=self.rate,
            burst=self.burst,
            waiting=len(self._waiters),
            waits=self._waits,
            wait_time=self._wait_time + sum(now - waiter.since for waiter in self._waiters),
            granted=self._granted,
            exempt=self._exempt,
        )

    def __repr__(self) -> str:
        if not self.limited:
            return "<BandwidthLimiter unlimited>"
        return (
            f"<BandwidthLimiter {self.rate:g} B/s burst {self.burst:g},"
            f" {len(self._waiters)} waiting>"
        )
