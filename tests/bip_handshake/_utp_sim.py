"""The event loop of the simulated links the sans-IO uTP tests join two cores with.

Each link decides what happens to a datagram (lost, delayed, queued in a small buffer...) in its
own ``collect``; advancing time, delivering what is due and running the cores' timers is the
same for all of them, here. :class:`MtuLink` is one such link: a path with a largest datagram
(dropped silently above it, or refused with EMSGSIZE by the sender's socket).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import UtpConnection, is_mtu_probe
from bip_handshake._utp_packet import UtpPacket

Event = tuple[int, int, str, bytes]
"""(arrival time in µs, tie-breaking counter, ``"ab"`` or ``"ba"``, datagram)."""


class SimulatedLink(Protocol):
    """Two cores, a clock and a heap of datagrams in flight."""

    a: UtpConnection
    b: UtpConnection
    now: int

    @property
    def in_flight(self) -> list[Event]: ...

    def collect(self) -> None:
        """Take what both cores want to send and put it in flight (or drop it)."""


def advance(link: SimulatedLink) -> bool:
    """Advance ``link`` to its next event: deliver what is due, run due timers.

    Returns False when nothing is left to happen.
    """
    link.collect()
    times = [t for t in (link.a.next_deadline(), link.b.next_deadline()) if t is not None]
    if link.in_flight:
        times.append(link.in_flight[0][0])
    if not times:
        return False
    link.now = max(link.now, min(times))
    while link.in_flight and link.in_flight[0][0] <= link.now:
        _, _, name, data = heapq.heappop(link.in_flight)
        target = link.b if name == "ab" else link.a
        target.receive_packet(UtpPacket.decode(data), link.now)
    for conn in (link.a, link.b):
        deadline = conn.next_deadline()
        if deadline is not None and deadline <= link.now:
            conn.handle_timer(link.now)
    link.collect()
    return True


SECOND = 1_000_000


@dataclass
class MtuLink:
    """Two cores over a path with a largest datagram per direction, and a fixed delay.

    A datagram over ``max_ab`` (from ``a``) or ``max_ba`` (from ``b``) is dropped silently,
    as a tunnel with a smaller MTU or a router with DF set and no ICMP does; with
    ``emsgsize`` the sender's own socket refuses it instead, and its core hears of it
    through ``datagram_too_big`` (the interface MTU is the small one), and of the rest of
    that batch, which is not sent, through ``datagram_not_sent``. ``None``: no limit.
    Change the limits at any time: the path shrinks or grows.
    """

    a: UtpConnection
    b: UtpConnection
    delay_us: int = 10_000
    max_ab: int | None = None
    max_ba: int | None = None
    emsgsize: bool = False
    fragment: bool = False
    """Datagrams over the limit that are not MTU probes arrive anyway, fragmented: the
    socket sends them with "don't fragment" clear (probes with it set), as libtorrent."""
    now: int = 0
    in_flight: list[Event] = field(default_factory=list)
    counter: int = 0
    dropped: int = 0
    """Datagrams the path dropped for their size."""
    refused: int = 0
    """Datagrams the sender's socket refused for their size (EMSGSIZE)."""
    fragmented: int = 0
    """Datagrams over the limit that arrived fragmented (with ``fragment``)."""
    sizes: list[int] = field(default_factory=list)
    """The size of every datagram ``a`` sent that was not refused."""

    def collect(self) -> None:
        """Send what both cores have, a bounded number of rounds: a refused datagram makes
        its core resend at once (the socket pumps it again)."""
        for _ in range(16):
            refused = False
            for name, core, limit in (("ab", self.a, self.max_ab), ("ba", self.b, self.max_ba)):
                stopped = False  # a socket stops a batch at a refusal: the rest stays unsent
                for data in core.datagrams_to_send(self.now):
                    if stopped:
                        core.datagram_not_sent(data)
                        continue
                    too_big = limit is not None and len(data) > limit
                    if too_big and self.fragment and not is_mtu_probe(data):
                        self.fragmented += 1
                    elif too_big:
                        if self.emsgsize:
                            self.refused += 1
                            core.datagram_too_big(data)
                            refused = stopped = True
                        else:
                            self.dropped += 1
                        continue
                    if name == "ab":
                        self.sizes.append(len(data))
                    self.counter += 1
                    heapq.heappush(
                        self.in_flight, (self.now + self.delay_us, self.counter, name, data)
                    )
            if not refused:
                return

    def run_until(self, done: Callable[[], bool], limit_us: int = 120 * SECOND) -> None:
        """Advance until ``done()`` (checked after every event), at most ``limit_us``."""
        end = self.now + limit_us
        while not done() and self.now < end:
            if not advance(self):
                break
        assert done(), f"not done at {self.now / SECOND:.3f} s"


def mtu_pair(
    config: UtpConfig | None = None, *, family: int = 4, seed: int = 0, **link: Any
) -> MtuLink:
    """A connected pair of cores on an :class:`MtuLink` (``link``: its fields)."""
    rng = random.Random(seed)
    config = config or UtpConfig()
    a = UtpConnection.connect(
        rng.randrange(0x10000), rng.randrange(0x10000), now_us=0, config=config, family=family
    )
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    b = UtpConnection.accept(syn, rng.randrange(0x10000), now_us=0, config=config, family=family)
    net = MtuLink(a, b, **link)
    net.run_until(lambda: a.is_open and b.is_open)
    return net


def move(net: MtuLink, data: bytes, *, read: Callable[[], bool] = lambda: True) -> bytes:
    """Write ``data`` from ``a`` (then its FIN), read at ``b`` while ``read()`` says so; return
    what ``b`` read once it saw the FIN."""
    got = bytearray()
    sent = 0

    def pump() -> bool:
        nonlocal sent
        if sent < len(data):
            sent += net.a.write(memoryview(data)[sent:])
        elif not net.a.write_shut:
            net.a.shutdown_write()
        if read():
            got.extend(net.b.read())
        return net.b.eof_received and not net.b.readable

    net.run_until(pump)
    return bytes(got)


def advance_to(link: SimulatedLink, until: int) -> None:
    """Run every event due up to ``until``, then move the clock there (a reader's timer)."""
    for _ in range(1_000_000):
        link.collect()
        times = [t for t in (link.a.next_deadline(), link.b.next_deadline()) if t is not None]
        if link.in_flight:
            times.append(link.in_flight[0][0])
        if not times or min(times) > until:
            link.now = max(link.now, until)
            return
        advance(link)
    raise AssertionError("advance_to: no end of events")
