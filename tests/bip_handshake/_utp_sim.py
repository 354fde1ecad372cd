"""The event loop of the simulated links the sans-IO uTP tests join two cores with.

Each link decides what happens to a datagram (lost, delayed, queued in a small buffer...) in its
own ``collect``; advancing time, delivering what is due and running the cores' timers is the
same for all of them, here.
"""

from __future__ import annotations

import heapq
from typing import Protocol

from bip_handshake._utp_connection import UtpConnection
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
