"""Traffic statistics: a sliding-window rate meter, traffic counters and their snapshots.

Sans-IO like the protocol cores: every method that needs the time takes ``now`` (seconds,
any monotonic origin; the :class:`~bip_peer.PeerManager` passes ``trio.current_time()``).

:class:`RateMeter` counts amounts (bytes) into fixed-width time buckets and reports the rate
over the last ``window`` seconds: an exact moving sum rather than an exponential average, so
a transfer that stops shows a rate of zero one window later.

:class:`TrafficCounter` holds what a connection (or a whole manager) counts both ways, and
:class:`PeerStatistics` / :class:`ManagerStatistics` are the frozen snapshots that
:meth:`PeerManager.statistics() <bip_peer.PeerManager.statistics>` returns;
:class:`LimiterStatistics` is one rate limiter's (:class:`~bip_peer.BandwidthLimiter`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._manager import Peer

__all__ = [
    "DEFAULT_RATE_BUCKETS",
    "DEFAULT_RATE_WINDOW",
    "LimiterStatistics",
    "ManagerStatistics",
    "PeerStatistics",
    "RateMeter",
    "TrafficCounter",
]

DEFAULT_RATE_WINDOW: Final = 5.0
"""Seconds a rate is averaged over by default."""
DEFAULT_RATE_BUCKETS: Final = 10
"""Buckets a window is split into by default: the rate's time resolution is window / buckets."""


class RateMeter:
    """A moving sum over the last ``window`` seconds, reported as a rate per second.

    Amounts are added into buckets ``window / buckets`` seconds wide; the rate is the sum of
    the buckets that overlap the window ending at ``now`` divided by the time they cover
    (never more than the time since the meter was created, so a young meter is not
    underestimated). Time that goes backwards is treated as the latest time seen.

    >>> meter = RateMeter(window=2.0, buckets=4, now=0.0)
    >>> meter.add(1000, now=0.5)
    >>> meter.rate(now=1.0)
    1000.0
    >>> meter.rate(now=4.0)  # the window has moved past the data
    0.0
    >>> meter.total
    1000

    Args:
        window: seconds averaged over (positive, finite).
        buckets: how many buckets the window is split into (at least 1).
        now: the time the meter starts counting.
    """

    __slots__ = ("_counts", "_index", "_latest", "_start", "_sum", "_total", "_width", "_window")

    def __init__(
        self,
        window: float = DEFAULT_RATE_WINDOW,
        buckets: int = DEFAULT_RATE_BUCKETS,
        *,
        now: float = 0.0,
    ) -> None:
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"a rate window must be positive and finite, not {window!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"a rate meter needs at least one bucket, not {buckets!r}")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, not {now!r}")
        self._window = float(window)
        self._width = self._window / buckets
        self._counts = [0] * buckets
        self._start = now
        self._latest = now
        self._index = math.floor(now / self._width)  # absolute index of the newest bucket
        self._sum = 0  # always sum(self._counts)
        self._total = 0

    @property
    def window(self) -> float:
        """Seconds the rate is averaged over."""
        return self._window

    @property
    def total(self) -> int:
        """Everything ever added."""
        return self._total

    def _advance(self, now: float) -> None:
        """Make the bucket holding ``now`` the newest, clearing those that left the window."""
        self._latest = now
        index = math.floor(now / self._width)
        step = index - self._index
        if step <= 0:
            return
        counts = self._counts
        size = len(counts)
        if step >= size:
            for slot in range(size):
                counts[slot] = 0
            self._sum = 0
        else:
            for absolute in range(self._index + 1, index + 1):
                slot = absolute % size
                self._sum -= counts[slot]
                counts[slot] = 0
        self._index = index

    def add(self, amount: int, now: float) -> None:
        """Count ``amount`` (bytes, messages...) at time ``now``.

        Raises:
            ValueError: ``amount`` is negative.
        """
        if amount < 0:
            raise ValueError(f"an amount counted is not negative, got {amount}")
        if now > self._latest:
            # _advance's first step, inlined: most reads and writes land in the newest bucket.
            index = math.floor(now / self._width)
            if index > self._index:
                self._advance(now)
            else:
                self._latest = now
        self._counts[self._index % len(self._counts)] += amount
        self._sum += amount
        self._total += amount

    def rate(self, now: float) -> float:
        """The amount per second over the window ending at ``now``."""
        if now > self._latest:
            self._advance(now)
        if self._sum == 0:
            return 0.0
        now = self._latest
        # The buckets kept cover from the start of the oldest one up to now.
        covered = (len(self._counts) - 1) * self._width + (now - self._index * self._width)
        span = min(covered, now - self._start)
        return self._sum / max(span, self._width)


class TrafficCounter:
    """Bytes and messages both ways, with rate meters for the bytes.

    The manager's hot path increments ``messages_sent`` / ``messages_received`` directly
    and calls :meth:`sent` / :meth:`received` once per stream write or read, not per message.

    >>> counter = TrafficCounter(now=0.0)
    >>> counter.received(16397, now=1.0)
    >>> counter.messages_received += 1
    >>> counter.bytes_received, counter.receive_rate(now=1.0)
    (16397, 16397.0)
    """

    __slots__ = ("_receive_meter", "_send_meter", "messages_received", "messages_sent")

    def __init__(
        self,
        *,
        now: float,
        window: float = DEFAULT_RATE_WINDOW,
        buckets: int = DEFAULT_RATE_BUCKETS,
    ) -> None:
        self._send_meter = RateMeter(window, buckets, now=now)
        self._receive_meter = RateMeter(window, buckets, now=now)
        self.messages_sent = 0
        self.messages_received = 0

    def sent(self, size: int, now: float) -> None:
        """Count ``size`` bytes written at ``now``."""
        self._send_meter.add(size, now)

    def received(self, size: int, now: float) -> None:
        """Count ``size`` bytes read at ``now``."""
        self._receive_meter.add(size, now)

    @property
    def bytes_sent(self) -> int:
        """Bytes written so far."""
        return self._send_meter.total

    @property
    def bytes_received(self) -> int:
        """Bytes read so far."""
        return self._receive_meter.total

    def send_rate(self, now: float) -> float:
        """Bytes per second written over the rate window ending at ``now``."""
        return self._send_meter.rate(now)

    def receive_rate(self, now: float) -> float:
        """Bytes per second read over the rate window ending at ``now``."""
        return self._receive_meter.rate(now)


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """A snapshot of one peer's connection.

    Attributes:
        bytes_sent: bytes written to the stream (protocol framing included).
        bytes_received: bytes read from the stream (the handshake's trailing bytes included).
        messages_sent: peer wire messages written (keep-alives included).
        messages_received: messages decoded (keep-alives included).
        send_rate: bytes per second written, over the rate window.
        receive_rate: bytes per second read, over the rate window.
        queued: messages waiting in the send queue.
        connected_for: seconds since the peer was added.
        idle_for: seconds since the peer last sent us anything.
    """

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    send_rate: float = 0.0
    receive_rate: float = 0.0
    queued: int = 0
    connected_for: float = 0.0
    idle_for: float = 0.0


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of one :class:`~bip_peer.BandwidthLimiter` (an upload or download limit).

    Only waits are counted, not every acquisition: a grant that finds the tokens there
    costs nothing to count, and an unlimited limiter counts nothing at all.

    Attributes:
        rate: the limit in bytes per second (``None``: unlimited).
        burst: the most bytes that may go at once after a pause (``None``: unlimited).
        waiting: tasks waiting for tokens now.
        waits: acquisitions that had to wait (found other waiters, or too few tokens).
        wait_time: seconds spent waiting, all waits together (those under way included).
        granted: bytes granted while limited.
        exempt: bytes that went past the limit while it was on, exempt from it: those of
            local peers (:attr:`~bip_peer.PeerManagerConfig.limit_local_peers` off).
    """

    rate: float | None = None
    burst: float | None = None
    waiting: int = 0
    waits: int = 0
    wait_time: float = 0.0
    granted: int = 0
    exempt: int = 0


@dataclass(frozen=True, slots=True)
class ManagerStatistics:
    """A snapshot of a whole :class:`~bip_peer.PeerManager`.

    The traffic counters include peers that were removed since.

    Attributes:
        bytes_sent: bytes written to every peer.
        bytes_received: bytes read from every peer.
        messages_sent: messages written to every peer.
        messages_received: messages decoded from every peer.
        send_rate: bytes per second written, all peers together.
        receive_rate: bytes per second read, all peers together.
        peers_added: peers ever added.
        peers_removed: peers removed (for any reason).
        rejected_full: :meth:`~bip_peer.PeerManager.add_peer` calls refused at capacity.
        removed_reasons: how many peers were removed for each reason.
        peers: the connected peers and their statistics.
        upload_limiter: the upload rate limit's state and waits (every writer's).
        download_limiter: the download rate limit's state and waits (every reader's).
    """

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    send_rate: float = 0.0
    receive_rate: float = 0.0
    peers_added: int = 0
    peers_removed: int = 0
    rejected_full: int = 0
    removed_reasons: Mapping[str, int] = field(default_factory=dict)
    peers: Mapping[Peer, PeerStatistics] = field(default_factory=dict)
    upload_limiter: LimiterStatistics = field(default_factory=LimiterStatistics)
    download_limiter: LimiterStatistics = field(default_factory=LimiterStatistics)
